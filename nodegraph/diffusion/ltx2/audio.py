"""The LTX-2 audio VAE (``AutoencoderKLLTX2Audio``: stereo mel spectrograms ↔ 8-channel latents) with its vocoder
(``LTX2Vocoder``: mel → 24 kHz waveform), as ComfyUI's LTXVAudioVAELoader gives them: one VAE value.

Audio LATENTs are ``[B, 8, L, 16]`` (latent frames × latent mel bins) of *normalised* latents, as ComfyUI keeps them;
the statistics apply to the patchified ``[B, L, 8·16]`` form, as ``LTX2Pipeline`` applies them. ``L`` follows the
video: ``ceil(frames / frame_rate · 16000 / 160 / 4)`` (25 latent frames per second). Files: ComfyUI's all-in-one
checkpoint (``audio_vae.`` with ``per_channel_statistics``, ``vocoder.`` with ``conv_pre``/``ups``/``resblocks``) or
diffusers' names under the same prefixes; configs from the shapes over the shipped ones.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..flow.loading import strip_prefix
from ..types import VAEModel
from .files import shipped_config

LATENT_DOWNSAMPLE = 4
_VOCODER_NAMES = (("conv_pre.", "conv_in."), ("ups.", "upsamplers."), ("resblocks.", "resnets."),
                  ("conv_post.", "conv_out."))


class LTX2AudioVAE(torch.nn.Module):
    """Audio VAE + vocoder: ``decode_audio`` (normalised latents → waveform), sizes for empty latents."""

    def __init__(self, inner: Any, vocoder: Any) -> None:
        super().__init__()
        self.inner, self.vocoder = inner, vocoder
        # what the image-VAE code reads of a VAE (latent channels; no image downscale)
        self.config = SimpleNamespace(latent_channels=int(inner.config.latent_channels), block_out_channels=(0,),
                                      scaling_factor=1.0, shift_factor=0.0, force_upcast=False)

    @property
    def latent_channels(self) -> int:
        """Channels of an audio latent (8)."""
        return int(self.inner.config.latent_channels)

    @property
    def latent_bins(self) -> int:
        """Mel bins of an audio latent (16)."""
        return int(self.inner.config.mel_bins) // LATENT_DOWNSAMPLE

    @property
    def sample_rate(self) -> int:
        """Sample rate the VAE's spectrograms are made at (16 kHz)."""
        return int(self.inner.config.sample_rate)

    @property
    def output_sample_rate(self) -> int:
        """Sample rate of the vocoder's waveforms (24 kHz)."""
        return int(self.vocoder.config.output_sampling_rate)

    @property
    def latents_per_second(self) -> float:
        """Audio latent frames per second of sound (25)."""
        return self.sample_rate / int(self.inner.config.mel_hop_length) / LATENT_DOWNSAMPLE

    def latent_length(self, frames: int, frame_rate: float) -> int:
        """Audio latent frames for ``frames`` video frames at ``frame_rate`` (ComfyUI's rounding up)."""
        return math.ceil(float(frames) / float(frame_rate) * self.latents_per_second)

    def _stats(self, like: Any) -> tuple[Any, Any]:
        return (self.inner.latents_mean.to(like.device, like.dtype), self.inner.latents_std.to(like.device, like.dtype))

    def decode_audio(self, latents: Any) -> Any:
        """Waveforms ``[B, 2, samples]`` at ``output_sample_rate`` of normalised audio latents ``[B, C, L, M]``."""
        c, bins = latents.shape[1], latents.shape[3]
        packed = latents.transpose(1, 2).flatten(2)
        mean, std = self._stats(packed)
        raw = (packed * std + mean).unflatten(2, (c, bins)).transpose(1, 2)
        mel = self.inner.decode(raw).sample
        return self.vocoder(mel)

    def encode_audio(self, waveform: Any, rate: int) -> Any:
        """Normalised audio latents ``[B, C, L, M]`` of waveforms ``[B, 2, T]`` at ``rate`` (ComfyUI's log-mel)."""
        from .mel import log_mel

        channels = int(self.inner.config.in_channels)
        if waveform.shape[1] != channels:
            raise ValueError(f"LTXVAudioVAEEncode: the audio has {waveform.shape[1]} channels but LTX-2's audio VAE "
                             f"encodes {channels} (stereo); convert the audio to stereo first")
        config = self.inner.config
        mel = log_mel(waveform, rate, self.sample_rate, int(config.mel_bins), int(config.mel_hop_length))
        param = next(self.inner.parameters())
        raw = self.inner.encode(mel.to(param.device, param.dtype)).latent_dist.mode()
        c, bins = raw.shape[1], raw.shape[3]
        packed = raw.transpose(1, 2).flatten(2)
        mean, std = self._stats(packed)
        return ((packed - mean) / std).unflatten(2, (c, bins)).transpose(1, 2)

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """Refused: VAEDecode makes images; audio latents decode with LTXVAudioVAEDecode."""
        raise ValueError("this VAE is LTX-2's audio VAE; decode audio latents with LTXVAudioVAEDecode, and video "
                         "latents with the checkpoint's VAE")

    encode = decode


def has_audio_vae(keys: Any) -> bool:
    """Whether tensor names hold LTX-2's audio VAE (``audio_vae.``) and vocoder (``vocoder.``)."""
    keys = list(keys)
    return any(k.startswith("audio_vae.decoder.") for k in keys) and any(k.startswith("vocoder.") for k in keys)


def _vae_config(state: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        base = int(state["encoder.conv_in.conv.weight"].shape[0])
        levels = len({k.split(".")[2] for k in state if k.startswith("encoder.down.")})
        mult = [int(state[f"encoder.down.{i}.block.0.conv1.conv.weight"].shape[0]) // base for i in range(levels)]
        latent = int(state["decoder.conv_in.conv.weight"].shape[1])
        blocks = len({k.split(".")[4] for k in state if k.startswith("encoder.down.0.block.")})
        bins = LATENT_DOWNSAMPLE * int(state["latents_mean"].numel()) // latent
    except KeyError as exc:
        raise UnknownModelError(f"{name}: the audio VAE lacks {exc}; the file is incomplete") from None
    return dict(shipped_config("audio_vae"), base_channels=base, ch_mult=mult, num_res_blocks=blocks,
                latent_channels=latent, mel_bins=bins,
                in_channels=int(state["encoder.conv_in.conv.weight"].shape[1]),
                output_channels=int(state["decoder.conv_out.conv.weight"].shape[0]))


def _vocoder_config(state: dict[str, Any]) -> dict[str, Any]:
    ups = len({k.split(".")[1] for k in state if k.startswith("upsamplers.")})
    base = shipped_config("vocoder")
    return dict(base, in_channels=int(state["conv_in.weight"].shape[1]),
                hidden_channels=int(state["conv_in.weight"].shape[0]),
                out_channels=int(state["conv_out.weight"].shape[0]),
                upsample_kernel_sizes=[int(state[f"upsamplers.{i}.weight"].shape[2]) for i in range(ups)],
                upsample_factors=base["upsample_factors"][:ups])


def audio_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel:
    """The audio VAE + vocoder of an LTX-2 file's tensors (``audio_vae.`` and ``vocoder.``, either naming)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLLTX2Audio
    from diffusers.pipelines.ltx2 import LTX2Vocoder

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    if not has_audio_vae(state):
        raise UnknownModelError(f"{name} holds no LTX-2 audio VAE (audio_vae.*) and vocoder (vocoder.*); choose the "
                                "LTX-2 checkpoint (ltx-2-19b-*.safetensors)")
    vae_state = strip_prefix(state, "audio_vae.")
    for old, new in (("per_channel_statistics.mean-of-means", "latents_mean"),
                     ("per_channel_statistics.std-of-means", "latents_std")):
        if old in vae_state:
            vae_state[new] = vae_state.pop(old)
    vae_state = {k: v for k, v in vae_state.items() if not k.startswith("per_channel_statistics.")}
    voc_state = {}
    for key, value in strip_prefix(state, "vocoder.").items():
        for old, new in _VOCODER_NAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        voc_state[key] = value
    compute = dtype or torch.float32
    with quiet_libraries(), init_empty_weights():
        inner = AutoencoderKLLTX2Audio.from_config(_vae_config(vae_state, name))
        vocoder = LTX2Vocoder.from_config(_vocoder_config(voc_state))
    fill(inner, vae_state, compute, name)
    fill(vocoder, voc_state, compute, name)
    return VAEModel(vae=LTX2AudioVAE(inner.eval(), vocoder.eval()).eval(), scaling_factor=1.0, source=name)


__all__ = ["LATENT_DOWNSAMPLE", "LTX2AudioVAE", "audio_vae_from_state", "has_audio_vae"]
