"""HunyuanVideo 1.0 nodes: image-to-video conditioning (HunyuanImageToVideo) and its text encoder
(TextEncodeHunyuanVideo_ImageToVideo), ComfyUI's names, inputs and outputs.

Text-to-video needs no node of its own: UNETLoader (the transformer), DualCLIPLoader type ``hunyuan_video``
(clip_l + llava_llama3, with Llama 3's ``tokenizer/`` folder beside the Llama file), VAELoader, CLIPTextEncode,
FluxGuidance (the embedded guidance, 6 in ComfyUI's graph), ModelSamplingSD3 (shift 7), EmptyHunyuanLatentVideo
and KSampler or SamplerCustomAdvanced; VAEDecode returns the frames.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    Combo,
    Int,
    Link,
    Node,
    Output,
    String,
    encode_hunyuan_dit_text,
    hookimpl,
    resample,
)

from .wan import encode_pixels

MAX_RESOLUTION = 16384
LATENT_CHANNELS = 16
TEMPORAL, SPATIAL = 4, 8
GUIDANCE_TYPES = ("v1 (concat)", "v2 (replace)", "custom")


def _frames(length: int) -> int:
    """Latent frames of a video of ``length`` frames (the first frame alone, then 4 per latent frame)."""
    return (length - 1) // TEMPORAL + 1


class TextEncodeHunyuanVideo_ImageToVideo(Node):
    """Encode a prompt with the start image's llava vision tokens for HunyuanVideo image-to-video."""

    DISPLAY_NAME = "TextEncodeHunyuanVideo_ImageToVideo"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "clip_vision_output": Link("CLIP_VISION_OUTPUT"),
              "prompt": String("", multiline=True, dynamic_prompts=True),
              "image_interleave": Int(2, min=1, max=512,
                                      tooltip="How much the image influences things vs the text prompt. Higher "
                                              "number means more influence from the text prompt.")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip: Any, clip_vision_output: Any, prompt: str, image_interleave: int):
        raise ValueError("TextEncodeHunyuanVideo_ImageToVideo: the llava_llama3_vision image tokens in the Llama "
                         "prompt are not supported yet (CLIPVisionLoader does not load the llava projector); encode "
                         "the prompt with CLIPTextEncode on the hunyuan_video CLIP — the start image still "
                         "conditions the model through HunyuanImageToVideo (v1 concat)")


class HunyuanImageToVideo(Node):
    """An empty video latent, and the start image as HunyuanVideo image-to-video conditioning."""

    DISPLAY_NAME = "HunyuanImageToVideo"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "vae": Link("VAE"),
              "width": Int(848, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(480, min=16, max=MAX_RESOLUTION, step=16),
              "length": Int(53, min=1, max=MAX_RESOLUTION, step=4),
              "batch_size": Int(1, min=1, max=4096),
              "guidance_type": Combo(GUIDANCE_TYPES, tooltip="v1 (concat): the image beside the latent (the "
                                     "concat I2V model); v2 (replace): the first frames replaced; custom: a "
                                     "reference latent"),
              "start_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, vae: Any, width: int, height: int, length: int, batch_size: int,
                guidance_type: str, start_image: Any = None):
        import torch

        if guidance_type == "v2 (replace)" and start_image is not None:
            raise ValueError("HunyuanImageToVideo: guidance_type \"v2 (replace)\" (the first frames kept as the image "
                             "while the rest is sampled) is not supported yet; use \"v1 (concat)\" with "
                             "hunyuan_video_image_to_video_720p_bf16.safetensors")
        frames = _frames(length)
        latent = torch.zeros(batch_size, LATENT_CHANNELS, frames, height // SPATIAL, width // SPATIAL)
        out: dict[str, Any] = {"downscale": SPATIAL}
        if start_image is not None:
            start = resample(start_image[:length, :, :, :3].movedim(-1, 1), width, height, "bilinear", "center")
            with ctx.models.use(vae) as (loaded,):
                if not hasattr(loaded.vae, "encode_video"):
                    raise ValueError("HunyuanImageToVideo: this VAE is not a video VAE; load "
                                     "hunyuan_video_vae_bf16.safetensors with VAELoader")
                image = encode_pixels(ctx, loaded.vae, start)
            mask = torch.ones(1, 1, frames, image.shape[-2], image.shape[-1])
            mask[:, :, :_frames(start.shape[0])] = 0.0
            if guidance_type == "v1 (concat)":
                values = {"concat_latent_image": image, "concat_mask": mask}
            else:  # "custom": a reference latent (refused by the sampler for now, with the reason)
                values = {"ref_latent": image}
            positive = [(emb, dict(extras, **values)) for emb, extras in positive]
        out["samples"] = latent
        return (positive, out)


class CLIPTextEncodeHunyuanDiT(Node):
    """Encode separate prompts for HunyuanDiT's BERT (Chinese CLIP) and mT5-XL text encoders."""

    DISPLAY_NAME = "CLIPTextEncodeHunyuanDiT"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "bert": String("", multiline=True, dynamic_prompts=True),
              "mt5xl": String("", multiline=True, dynamic_prompts=True)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip: Any, bert: str, mt5xl: str):
        return (encode_hunyuan_dit_text(ctx, clip, bert, mt5xl),)


@hookimpl
def nodegraph_nodes():
    """The HunyuanVideo nodes and HunyuanDiT's text encoder node."""
    return [TextEncodeHunyuanVideo_ImageToVideo, HunyuanImageToVideo, CLIPTextEncodeHunyuanDiT]
