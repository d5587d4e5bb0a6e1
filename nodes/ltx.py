"""LTX-Video nodes: empty video latents, frame-rate conditioning, the LTXV scheduler and image-to-video.

An LTX-Video LATENT is ``[B, 128, T, h, w]``: ``T = (frames - 1) // 8 + 1`` latent frames of ``h = height / 32`` by
``w = width / 32`` cells, holding the VAE's normalised latents (ComfyUI's convention). Load the all-in-one file with
CheckpointLoaderSimple (or the transformer with UNETLoader and the VAE with VAELoader), T5-XXL with CLIPLoader type
``ltxv``; SamplerCustom with LTXVScheduler's SIGMAS (or KSampler) samples it and VAEDecode returns the frames.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from nodegraph.api import (
    Boolean,
    Float,
    Int,
    LatentUpscaleModel,
    Link,
    ModelCombo,
    Node,
    Output,
    derive,
    hookimpl,
    latent_upscale_dtype,
    list_models,
    load_latent_upscale_model,
    ltx_guides,
    ltx_preprocess,
    ltx_sigmas,
    ltx_upsample_latent,
    resample,
)

from .loaders import ModelFileNode

MAX_RESOLUTION = 16384
CHANNELS = 128
SPATIAL = 32
TEMPORAL = 8


def _latent(batch_size: int, length: int, height: int, width: int) -> Any:
    import torch

    return torch.zeros(batch_size, CHANNELS, (length - 1) // TEMPORAL + 1, height // SPATIAL, width // SPATIAL)


def _tokens(latent: dict | None) -> int:
    """Latent cells of a video latent (4096 without one), what LTX-Video's noise shift depends on."""
    return 4096 if latent is None else math.prod(int(s) for s in latent["samples"].shape[2:])


def _shift(tokens: int, max_shift: float, base_shift: float) -> float:
    slope = (max_shift - base_shift) / (4096 - 1024)
    return tokens * slope + (base_shift - slope * 1024)


def _with_extras(conditioning: list, **values: Any) -> list:
    """A copy of ``conditioning`` with ``values`` set in every entry's extras (tensors shared)."""
    return [(emb, dict(extras, **values)) for emb, extras in conditioning]


class EmptyLTXVLatentVideo(Node):
    """An empty LTX-Video latent (128 channels, 32× spatial and 8× temporal compression)."""

    DISPLAY_NAME = "EmptyLTXVLatentVideo"
    CATEGORY = "latent/video/ltxv"
    INPUTS = {"width": Int(768, min=64, max=MAX_RESOLUTION, step=32),
              "height": Int(512, min=64, max=MAX_RESOLUTION, step=32),
              "length": Int(97, min=1, max=MAX_RESOLUTION, step=8),
              "batch_size": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, length: int, batch_size: int = 1):
        return ({"samples": _latent(batch_size, length, height, width), "downscale": SPATIAL},)


class LTXVConditioning(Node):
    """Set the frame rate LTX-Video generates for (its rotary positions in time follow it)."""

    DISPLAY_NAME = "LTXVConditioning"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"),
              "frame_rate": Float(25.0, min=0.0, max=1000.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, ctx, positive: list, negative: list, frame_rate: float):
        return (_with_extras(positive, frame_rate=frame_rate), _with_extras(negative, frame_rate=frame_rate))


class LTXVScheduler(Node):
    """LTX-Video's noise levels: shifted by the latent's size, stretched so the last one before 0 is ``terminal``."""

    DISPLAY_NAME = "LTXVScheduler"
    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None),
              "max_shift": Float(2.05, min=0.0, max=100.0, step=0.01),
              "base_shift": Float(0.95, min=0.0, max=100.0, step=0.01),
              "stretch": Boolean(True, tooltip="Stretch the sigmas to be in the range [terminal, 1]."),
              "terminal": Float(0.1, min=0.0, max=0.99, step=0.01,
                                tooltip="The terminal value of the sigmas after stretching."),
              "latent": Link("LATENT", optional=True)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps: int, max_shift: float, base_shift: float, stretch: bool, terminal: float,
                latent: dict | None = None):
        return (ltx_sigmas(steps, max_shift, base_shift, stretch, terminal, _tokens(latent)),)


class ModelSamplingLTXV(Node):
    """Set an LTX-Video model's noise shift from the latent's size (base_shift at 1024 cells, max_shift at 4096)."""

    DISPLAY_NAME = "ModelSamplingLTXV"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "max_shift": Float(2.05, min=0.0, max=100.0, step=0.01),
              "base_shift": Float(0.95, min=0.0, max=100.0, step=0.01),
              "latent": Link("LATENT", optional=True)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, max_shift: float, base_shift: float, latent: dict | None = None):
        flow = ctx.models.get(model).flow
        if flow is None:
            raise ValueError(f"ModelSamplingLTXV applies to flow-matching models (LTX-Video); {model.arch} is not "
                             "one. Remove the node, or load an LTX-Video model")
        shift = _shift(_tokens(latent), max_shift, base_shift)
        return (derive(model, flow=dataclasses.replace(flow, kind="flux", shift=shift)),)


class LTXVImgToVideo(Node):
    """Start an LTX-Video latent from an image: its frames are kept (``strength`` 1) while the rest is generated."""

    DISPLAY_NAME = "LTXVImgToVideo"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              "image": Link("IMAGE"),
              "width": Int(768, min=64, max=MAX_RESOLUTION, step=32),
              "height": Int(512, min=64, max=MAX_RESOLUTION, step=32),
              "length": Int(97, min=9, max=MAX_RESOLUTION, step=8),
              "batch_size": Int(1, min=1, max=4096, step=None),
              "strength": Float(1.0, min=0.0, max=1.0, step=None)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, image: Any, width: int, height: int,
                length: int, batch_size: int, strength: float):
        import torch

        pixels = resample(image.movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
        with ctx.models.use(vae) as (loaded,):
            if getattr(loaded.vae.config, "latent_channels", None) != CHANNELS:
                raise ValueError("LTXVImgToVideo: this VAE is not the LTX-Video VAE; connect the VAE of the LTX-Video "
                                 "checkpoint")
            with ctx.devices.use(loaded.vae), torch.no_grad():
                param = next(loaded.vae.parameters())
                encoded = loaded.vae.encode(pixels.to(param.device, param.dtype) * 2.0 - 1.0).latent_dist.mean
                encoded = encoded.float().cpu()
        latent = _latent(batch_size, length, height, width)
        frames = min(encoded.shape[2], latent.shape[2])
        latent[:, :, :frames] = encoded[:, :, :frames]
        mask = torch.ones(batch_size, 1, latent.shape[2], 1, 1)
        mask[:, :, :frames] = 1.0 - strength
        return (positive, negative, {"samples": latent, "noise_mask": mask, "downscale": SPATIAL})


class LTXVPreprocess(Node):
    """Compress images once as H.264 video frames (the look LTX-Video expects of a start image)."""

    DISPLAY_NAME = "LTXV Preprocess"
    CATEGORY = "video/preprocessors"
    INPUTS = {"image": Link("IMAGE"),
              "img_compression": Int(35, min=0, max=100, step=None, tooltip="Amount of compression to apply on image.")}
    OUTPUTS = (Output("IMAGE", "output_image"),)

    def execute(self, ctx, image: Any, img_compression: int):
        return (ltx_preprocess(image, img_compression),)


def _encode_frames(ctx: Any, vae: Any, frames: Any, width: int, height: int, node: str) -> Any:
    """Normalised LTX latent [1, 128, F, h, w] of IMAGE frames resized (bilinear, centre crop) to width × height."""
    import torch

    pixels = resample(frames.movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
    with ctx.models.use(vae) as (loaded,):
        if getattr(loaded.vae.config, "latent_channels", None) != CHANNELS:
            raise ValueError(f"{node}: this VAE is not the LTX-Video VAE; connect the VAE of the LTX-Video checkpoint")
        with ctx.devices.use(loaded.vae), torch.no_grad():
            param = next(loaded.vae.parameters())
            encoded = loaded.vae.encode(pixels.to(param.device, param.dtype) * 2.0 - 1.0).latent_dist.mean
    return encoded.float().cpu()


class LTXVAddGuide(Node):
    """Guide an LTX-Video latent with an image or clip at a frame: its latent frames are appended and kept."""

    DISPLAY_NAME = "LTXVAddGuide"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              "latent": Link("LATENT"),
              "image": Link("IMAGE", tooltip="Image or video to condition the latent video on. Must be 8*n + 1 "
                                             "frames. If the video is not 8*n + 1 frames, it will be cropped to the "
                                             "nearest 8*n + 1 frames."),
              "frame_idx": Int(0, min=-9999, max=9999, step=None,
                               tooltip="Frame index to start the conditioning at. Negative values are counted from "
                                       "the end of the video."),
              "strength": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, latent: dict, image: Any, frame_idx: int,
                strength: float):
        import torch

        samples = latent["samples"]
        if samples.dim() != 5 or samples.shape[1] != CHANNELS:
            raise ValueError(f"LTXVAddGuide: latent is {tuple(samples.shape)}, not an LTX-Video latent "
                             "[B, 128, T, h, w]; connect EmptyLTXVLatentVideo")
        mask = ltx_guides.noise_mask_of(latent)
        length, height, width = samples.shape[2], samples.shape[3], samples.shape[4]
        keep = (image.shape[0] - 1) // TEMPORAL * TEMPORAL + 1
        frames = image
        resolved = frame_idx
        if frame_idx < 0:
            _, count = ltx_guides.keyframes_of(positive)
            resolved = max((length - count - 1) * TEMPORAL + 1 + frame_idx, 0)
        causal_fix = resolved == 0 or keep == 1
        if not causal_fix:  # a mid-video clip: encode with a throwaway first frame, then drop its latent frame
            frames = torch.cat([frames[:1], frames], dim=0)
        frames = frames[:(frames.shape[0] - 1) // TEMPORAL * TEMPORAL + 1]  # 8n + 1 frames
        guide = _encode_frames(ctx, vae, frames, width * SPATIAL, height * SPATIAL, "LTXVAddGuide")
        if not causal_fix:
            guide, frames = guide[:, :, 1:], frames[1:]
        guide = guide.expand(samples.shape[0], -1, -1, -1, -1)
        start, latent_idx = ltx_guides.frame_index(positive, length, frames.shape[0], frame_idx)
        if latent_idx + guide.shape[2] > length:
            raise ValueError(f"LTXVAddGuide: {guide.shape[2]} guide latent frames from latent frame {latent_idx} "
                             f"exceed the video's {length}; use a shorter guide or an earlier frame_idx")
        positive = ltx_guides.with_keyframes(positive, start, guide, causal_fix)
        negative = ltx_guides.with_keyframes(negative, start, guide, causal_fix)
        guide_mask = torch.full((mask.shape[0], 1, guide.shape[2], mask.shape[3], mask.shape[4]), 1.0 - strength)
        out = dict(latent, samples=torch.cat([samples, guide], dim=2), noise_mask=torch.cat([mask, guide_mask], dim=2))
        return (positive, negative, out)


class LTXVCropGuides(Node):
    """Remove LTXVAddGuide's appended guide frames from a sampled latent (and their positions from the conditioning)."""

    DISPLAY_NAME = "LTXVCropGuides"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "latent": Link("LATENT")}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, latent: dict):
        return ltx_guides.crop_guides(positive, negative, latent)


UPSCALERS = "latent_upscale_models"
LATENT_UPSCALE_MODEL = "LATENT_UPSCALE_MODEL"


def _upscaler_names(config: Any) -> list[str]:
    """Latent upsampler files under models/latent_upscale_models."""
    return list_models(config, UPSCALERS)


class LatentUpscaleModelLoader(ModelFileNode):
    """Load an LTX-Video or LTX-2 latent upsampler (safetensors) from models/latent_upscale_models."""

    DISPLAY_NAME = "Load Latent Upscale Model"
    CATEGORY = "loaders"
    MODEL_INPUT = ("model_name", UPSCALERS)
    INPUTS = {"model_name": ModelCombo(UPSCALERS, _upscaler_names)}
    OUTPUTS = (Output(LATENT_UPSCALE_MODEL),)

    def execute(self, ctx, model_name: str):
        path = ctx.models.resolve(UPSCALERS, model_name)
        ctx.models.check_loadable(path)
        dtype = latent_upscale_dtype(ctx.devices.device)
        return (ctx.models.load_file(UPSCALERS, model_name,
                                     lambda: load_latent_upscale_model(path, False, model_name, dtype)),)


class LTXVLatentUpsampler(Node):
    """Upsamples a video latent by a factor of 2."""

    DISPLAY_NAME = "LTXVLatentUpsampler"
    CATEGORY = "latent/video"
    INPUTS = {"samples": Link("LATENT"), "upscale_model": Link(LATENT_UPSCALE_MODEL), "vae": Link("VAE")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, upscale_model: Any, vae: Any):
        with ctx.models.use(upscale_model, vae) as (upscaler, loaded):
            if not isinstance(upscaler, LatentUpscaleModel):
                raise TypeError(f"LTXVLatentUpsampler: upscale_model must come from LatentUpscaleModelLoader (got "
                                f"{type(upscaler).__name__}); connect that node's output")
            with ctx.devices.use(upscaler.model):
                upsampled = ltx_upsample_latent(upscaler, loaded.vae, samples["samples"])
        out = dict(samples, samples=upsampled)
        out.pop("noise_mask", None)
        return (out,)


@hookimpl
def nodegraph_types():
    """LATENT_UPSCALE_MODEL."""
    return {LATENT_UPSCALE_MODEL: "an LTX latent upsampler (LatentUpscaleModelLoader)"}


@hookimpl
def nodegraph_nodes():
    """The LTX-Video nodes."""
    return [EmptyLTXVLatentVideo, LTXVConditioning, LTXVScheduler, ModelSamplingLTXV, LTXVImgToVideo,
            LTXVPreprocess, LTXVAddGuide, LTXVCropGuides, LatentUpscaleModelLoader, LTXVLatentUpsampler]
