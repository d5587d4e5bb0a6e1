"""LTX-2 (audio-video) nodes: the Gemma-3 text encoder loader, the audio VAE, empty audio latents, and joining/splitting
audio-video latents, as ComfyUI's LTX-2 graphs use them.

Text-to-video with sound: CheckpointLoaderSimple (the LTX-2 file: MODEL + video VAE), LTXAVTextEncoderLoader (Gemma-3
12B + the same file) → CLIPTextEncode ×2 → LTXVConditioning; EmptyLTXVLatentVideo + LTXVEmptyLatentAudio (from
LTXVAudioVAELoader on the same file) → LTXVConcatAVLatent → KSampler or SamplerCustom(Advanced) with
LTXVScheduler → LTXVSeparateAVLatent → VAEDecode (frames) and LTXVAudioVAEDecode (AUDIO) → CreateVideo →
SaveVideo (an mp4 with sound).
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    Boolean,
    Float,
    Int,
    Link,
    ModelCombo,
    Node,
    Output,
    checkpoint_names,
    hookimpl,
    ltx2_public,
    text_encoder_names,
)

from .split_loaders import _SplitFileNode

_LinkInput = type(Link("VAE"))
_IntInput = type(Int(0))


class _NamedLink(_LinkInput):
    """A link input with ComfyUI's display name (``display_name`` in /object_info)."""

    display_name: str | None = None

    def options(self, config: Any = None) -> dict[str, Any]:
        """Options with the display name."""
        out = super().options(config)
        if self.display_name:
            out["display_name"] = self.display_name
        return out


class _NumberInt(_IntInput):
    """An INT shown as a number box (ComfyUI's ``display: number``)."""

    def options(self, config: Any = None) -> dict[str, Any]:
        """Options with ``display: number``."""
        return dict(super().options(config), display="number")


def _audio_vae_input(tooltip: str) -> Any:
    return _NamedLink(type="VAE", display_name="Audio VAE", tooltip=tooltip)


class LTXAVTextEncoderLoader(_SplitFileNode):
    """Load LTX-2's text encoder: Gemma-3 12B (with its tokenizer/ folder beside it) and the checkpoint's connectors."""

    DISPLAY_NAME = "LTXV Audio Text Encoder Loader"
    CATEGORY = "advanced/loaders"
    FILE_INPUTS = (("text_encoder", ("text_encoders", "clip")), ("ckpt_name", ("checkpoints",)))
    INPUTS = {"text_encoder": ModelCombo("text_encoders", text_encoder_names,
                                         tooltip="gemma_3_12B_it.safetensors; Gemma's tokenizer/ folder must lie "
                                                 "beside it (not shipped: Gemma's terms)"),
              "ckpt_name": ModelCombo("checkpoints", checkpoint_names,
                                      tooltip="the LTX-2 checkpoint (its text projection and connectors)")}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx, text_encoder: str, ckpt_name: str):
        return (ltx2_public.load_ltxav_text_encoder(ctx, text_encoder, ckpt_name),)


class LTXVAudioVAELoader(_SplitFileNode):
    """Load LTX-2's audio VAE and vocoder from the LTX-2 checkpoint."""

    DISPLAY_NAME = "LTXV Audio VAE Loader"
    CATEGORY = "audio"
    FILE_INPUTS = (("ckpt_name", ("checkpoints",)),)
    INPUTS = {"ckpt_name": ModelCombo("checkpoints", checkpoint_names, tooltip="Audio VAE checkpoint to load.")}
    OUTPUTS = (Output("VAE", "Audio VAE"),)

    def execute(self, ctx, ckpt_name: str):
        return (ltx2_public.load_audio_vae(ctx, ckpt_name),)


class LTXVAudioVAEEncode(Node):
    """Encode AUDIO into LTX-2 audio latents (its log-mel spectrogram through the audio VAE's encoder)."""

    DISPLAY_NAME = "LTXV Audio VAE Encode"
    CATEGORY = "audio"
    INPUTS = {"audio": Link("AUDIO", tooltip="The audio to be encoded."),
              "audio_vae": _audio_vae_input("The Audio VAE model to use for encoding.")}
    OUTPUTS = (Output("LATENT", "Audio Latent"),)

    def execute(self, ctx, audio: Any, audio_vae: Any):
        return (ltx2_public.encode_audio(ctx, audio_vae, audio),)


class LTXVAudioVAEDecode(Node):
    """Decode LTX-2 audio latents to AUDIO (24 kHz stereo) with the audio VAE and its vocoder."""

    DISPLAY_NAME = "LTXV Audio VAE Decode"
    CATEGORY = "audio"
    INPUTS = {"samples": Link("LATENT", tooltip="The latent to be decoded."),
              "audio_vae": _audio_vae_input("The Audio VAE model used for decoding the latent.")}
    OUTPUTS = (Output("AUDIO", "Audio"),)

    def execute(self, ctx, samples: dict, audio_vae: Any):
        return (ltx2_public.decode_audio(ctx, audio_vae, samples),)


class LTXVEmptyLatentAudio(Node):
    """An empty LTX-2 audio latent as long as ``frames_number`` video frames at ``frame_rate``."""

    DISPLAY_NAME = "LTXV Empty Latent Audio"
    CATEGORY = "latent/audio"
    INPUTS = {"frames_number": _NumberInt(default=97, min=1, max=1000, step=1, tooltip="Number of frames."),
              "frame_rate": _NumberInt(default=25, min=1, max=1000, step=1, tooltip="Number of frames per second."),
              "batch_size": _NumberInt(default=1, min=1, max=4096, step=None,
                                       tooltip="The number of latent audio samples in the batch."),
              "audio_vae": _audio_vae_input("The Audio VAE model to get configuration from.")}
    OUTPUTS = (Output("LATENT", "Latent"),)

    def execute(self, ctx, frames_number: int, frame_rate: int, batch_size: int, audio_vae: Any):
        return (ltx2_public.empty_audio_latent(ctx, audio_vae, frames_number, frame_rate, batch_size),)


class LTXVImgToVideoInplace(Node):
    """Put an image into the first frames of a video latent, kept (``strength`` 1) while the rest is generated."""

    DISPLAY_NAME = "LTXVImgToVideoInplace"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"vae": Link("VAE"), "image": Link("IMAGE"), "latent": Link("LATENT"),
              "strength": Float(1.0, min=0.0, max=1.0, step=None),
              "bypass": Boolean(False, tooltip="Bypass the conditioning.")}
    OUTPUTS = (Output("LATENT", "latent"),)

    def execute(self, ctx, vae: Any, image: Any, latent: dict, strength: float, bypass: bool = False):
        if bypass:
            return (latent,)
        return (ltx2_public.img_to_video_inplace(ctx, vae, image, latent, strength),)


class LTXVConcatAVLatent(Node):
    """Join a video latent and an audio latent into one LATENT that LTX-2 samples together."""

    DISPLAY_NAME = "LTXVConcatAVLatent"
    CATEGORY = "latent/video/ltxv"
    INPUTS = {"video_latent": Link("LATENT"), "audio_latent": Link("LATENT")}
    OUTPUTS = (Output("LATENT", "latent"),)

    def execute(self, ctx, video_latent: dict, audio_latent: dict):
        return (ltx2_public.concat_av(video_latent, audio_latent),)


class LTXVSeparateAVLatent(Node):
    """Split an LTX-2 audio-video LATENT into its video latent and its audio latent."""

    DISPLAY_NAME = "LTXVSeparateAVLatent"
    CATEGORY = "latent/video/ltxv"
    INPUTS = {"av_latent": Link("LATENT")}
    OUTPUTS = (Output("LATENT", "video_latent"), Output("LATENT", "audio_latent"))

    def execute(self, ctx, av_latent: dict):
        return ltx2_public.separate_av(av_latent)


@hookimpl
def nodegraph_nodes():
    """The LTX-2 (audio-video) nodes."""
    return [LTXAVTextEncoderLoader, LTXVAudioVAELoader, LTXVAudioVAEEncode, LTXVAudioVAEDecode, LTXVEmptyLatentAudio,
            LTXVImgToVideoInplace, LTXVConcatAVLatent, LTXVSeparateAVLatent]
