"""The LTX-Video VAE (``AutoencoderKLLTXVideo``: 128 channels, 32× spatial, 8× temporal) behind the image-VAE
interface the nodes use.

LATENTs of LTX-Video hold the VAE's *normalised* latents ``(z - mean) / std`` (per-channel statistics stored in the
file), as ComfyUI's LTXV VAE gives them, so the transformer reads them as they are:
- ``decode`` of ``[B, 128, T, h, w]`` returns every frame of every video as one image batch
  ``[B · (8(T - 1) + 1), 3, 32h, 32w]`` — VAEDecode yields the frames as an IMAGE batch;
- ``encode`` of an image batch ``[N, 3, H, W]`` treats the images as the frames of one video and returns
  ``[1, 128, (N - 1) // 8 + 1, H/32, W/32]`` (VAEEncode, LTXVImgToVideo).
Decoders with timestep conditioning (0.9.1) decode at timestep 0.05 with 2.5 % noise (ComfyUI's defaults), drawn
from a fixed seed. Files: the original/ComfyUI layout under ``vae.`` (converted with diffusers' converter) or
diffusers' layout; the 0.9.0, 0.9.1 and 0.9.5+ (2048-channel encoder, also 0.9.6–0.9.8) VAEs.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..types import VAEModel
from .files import shipped_config

_ORIGINAL = ("per_channel_statistics.mean-of-means", "vae.per_channel_statistics.mean-of-means")
_DIFFUSERS = "decoder.conv_out.conv.weight"
DECODE_TIMESTEP = 0.05
DECODE_NOISE = 0.025


def is_ltx_vae(keys: Any) -> bool:
    """Whether tensor names are an LTX-Video VAE's (original layout, with or without ``vae.``, or diffusers')."""
    keys = set(keys)
    if any(k in keys for k in _ORIGINAL):
        return True
    return _DIFFUSERS in keys and "latents_mean" in keys and "encoder.conv_in.conv.weight" in keys


class LTXVideoVAE(torch.nn.Module):
    """An ``AutoencoderKLLTXVideo`` whose latents are normalised per channel (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        channels = int(inner.config.latent_channels)
        # six levels: VAEModel.downscale = 2 ** 5 = 32 pixels per cell
        self.config = SimpleNamespace(latent_channels=channels, block_out_channels=(0,) * 6, scaling_factor=1.0,
                                      shift_factor=0.0, force_upcast=False)

    @property
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame (8), for the temporal tiler."""
        return int(self.inner.temporal_compression_ratio)

    def _stats(self, like: Any) -> tuple[Any, Any]:
        shape = (1, -1, 1, 1, 1)
        return (self.inner.latents_mean.view(shape).to(like.device, like.dtype),
                self.inner.latents_std.view(shape).to(like.device, like.dtype))

    def encode_video(self, video: Any) -> Any:
        """Normalised posterior mean ``[B, 128, T, h, w]`` of videos ``[B, 3, F, H, W]`` in -1..1."""
        raw = self.inner.encode(video).latent_dist.mean
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist.mean``: the normalised latent of one video (the image batch ``[N, 3, H, W]`` as frames)."""
        video = x.movedim(0, 1).unsqueeze(0) if x.dim() == 4 else x
        z = self.encode_video(video)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, mode=lambda: z, sample=lambda generator=None: z))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: the frames ``[B · F, 3, H, W]`` of normalised video latents ``[B, 128, T, h, w]``."""
        if z.dim() != 5:
            raise ValueError(f"the LTX-Video VAE decodes video latents [B, 128, T, h, w], not {tuple(z.shape)}; "
                             "connect the LATENT of an LTX-Video sampler")
        mean, std = self._stats(z)
        raw = z * std + mean
        temb = None
        if self.inner.config.timestep_conditioning:
            gen = torch.Generator("cpu").manual_seed(0)
            noise = torch.randn(raw.shape, generator=gen, dtype=torch.float32).to(raw.device, raw.dtype)
            raw = (1.0 - DECODE_NOISE) * raw + DECODE_NOISE * noise
            temb = torch.full((raw.shape[0],), DECODE_TIMESTEP, device=raw.device, dtype=raw.dtype)
        frames = self.inner.decode(raw, temb).sample.movedim(2, 1).flatten(0, 1)
        return SimpleNamespace(sample=frames) if return_dict else (frames,)

    def forward(self, x: Any) -> Any:
        """Reconstruction of the frames of one video [N, 3, H, W]."""
        return self.decode(self.encode(x).latent_dist.mean).sample


def _count(state: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})


def _res(state: dict[str, Any], prefix: str) -> int:
    """Output channels of the first resnet under ``prefix``."""
    return int(state[prefix + "resnets.0.conv1.conv.weight"].shape[0])


def _config(state: dict[str, Any], name: str) -> dict[str, Any]:
    """The VAE config, sized from the shapes: 0.9.0's structure, or 0.9.5's (also 0.9.6–0.9.8); 0.9.1 as shipped."""
    first = state.get("encoder.conv_in.conv.weight")
    if first is None or "decoder.conv_in.conv.weight" not in state or "encoder.conv_out.conv.weight" not in state:
        raise UnknownModelError(f"{name} lacks the LTX-Video VAE's encoder/decoder convolutions; the file is "
                                "incomplete")
    levels = _count(state, "encoder.down_blocks.")
    ups = _count(state, "decoder.up_blocks.")
    enc = [_count(state, f"encoder.down_blocks.{i}.resnets.") for i in range(levels)]
    dec = [_count(state, f"decoder.up_blocks.{i}.resnets.") for i in range(ups)]
    common = {"latent_channels": int(state["decoder.conv_in.conv.weight"].shape[1]),
              "patch_size": round((int(first.shape[1]) // 3) ** 0.5),
              "layers_per_block": enc + [_count(state, "encoder.mid_block.resnets.")],
              "decoder_layers_per_block": dec[::-1] + [_count(state, "decoder.mid_block.resnets.")]}
    if "encoder.down_blocks.0.downsamplers.0.conv.conv.weight" in state:  # 0.9.5: channels change in downsamplers
        return dict(shipped_config("vae_0.9.5"), **common,
                    block_out_channels=[_res(state, f"encoder.down_blocks.{i}.") for i in range(levels)]
                    + [_res(state, "encoder.mid_block.")],
                    decoder_block_out_channels=[2 * _res(state, f"decoder.up_blocks.{i}.")
                                                for i in reversed(range(ups))])
    if "decoder.time_embedder.timestep_embedder.linear_1.weight" in state:
        return shipped_config("vae_0.9.1")
    return dict(shipped_config("vae_0.9.0"), **common,
                block_out_channels=[_res(state, f"encoder.down_blocks.{i}.") for i in range(levels)],
                decoder_block_out_channels=[_res(state, f"decoder.up_blocks.{i}.") for i in reversed(range(ups))])


def ltx_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel | None:
    """VAE from an LTX-Video VAE's tensors (``state`` is emptied); None when they are not an LTX VAE's."""
    from diffusers import AutoencoderKLLTXVideo

    from ..flow.loading import filled_model
    from ..loading import quiet_libraries

    if not is_ltx_vae(state):
        return None
    if any(k in state for k in _ORIGINAL):
        from diffusers.loaders.single_file_utils import (
            convert_ltx_vae_checkpoint_to_diffusers,
        )

        if "per_channel_statistics.mean-of-means" in state:  # a bare VAE file: the converter expects "vae."
            for k in list(state):
                state["vae." + k] = state.pop(k)
        with quiet_libraries():
            converted = convert_ltx_vae_checkpoint_to_diffusers(state)
        state.clear()
        state = converted
    inner = filled_model(AutoencoderKLLTXVideo, _config(state, name), state, name, dtype)
    return VAEModel(vae=LTXVideoVAE(inner).eval(), scaling_factor=1.0, shift_factor=0.0, source=name)


__all__ = ["DECODE_NOISE", "DECODE_TIMESTEP", "LTXVideoVAE", "is_ltx_vae", "ltx_vae_from_state"]
