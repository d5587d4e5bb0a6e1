"""Stable Video Diffusion nodes (ComfyUI's names, inputs, defaults and semantics).

``ImageOnlyCheckpointLoader`` reads svd.safetensors / svd_xt.safetensors (UNet, CLIP vision and VAE in one file);
``SVD_img2vid_Conditioning`` turns a start image into the positive/negative conditionings (image embedding, the
image's latent, fps, motion bucket, augmentation) and an empty clip LATENT of ``video_frames`` frames;
``VideoLinearCFGGuidance``/``VideoTriangleCFGGuidance`` make the cfg scale change along the clip;
``ImageOnlyCheckpointSave`` writes the three models back as one file. KSampler samples the
clip, VAEDecode gives its frames as an IMAGE batch (SaveAnimatedWEBP, CreateVideo + SaveVideo).
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    ClipVision,
    ExecutionContext,
    Float,
    Int,
    Link,
    ModelCombo,
    Node,
    NodeOutput,
    Output,
    String,
    encode_clip_vision,
    hookimpl,
    list_models,
    load_svd_checkpoint,
    resample,
    save_svd_checkpoint,
    svd_parts,
    with_video_cfg,
)

from .image_ops import MAX_SIZE
from .latent import encode as vae_encode
from .loaders import ModelFileNode
from .vision import load_checkpoint

CLIP_VISION = "CLIP_VISION"


def _checkpoints(config: Any) -> list[str]:
    """Checkpoints under models/checkpoints."""
    return list_models(config, "checkpoints")


class ImageOnlyCheckpointLoader(ModelFileNode):
    """Load an image-to-video checkpoint (Stable Video Diffusion): the MODEL, its CLIP vision encoder and its VAE."""

    DISPLAY_NAME = "Image Only Checkpoint Loader (img2vid model)"
    CATEGORY = "loaders/video_models"
    MODEL_INPUT = ("ckpt_name", "checkpoints")
    INPUTS = {"ckpt_name": ModelCombo("checkpoints", _checkpoints)}
    OUTPUTS = (Output("MODEL"), Output(CLIP_VISION), Output("VAE"))

    def execute(self, ctx: ExecutionContext, ckpt_name: str) -> tuple[Any, Any, Any]:
        return svd_parts(load_checkpoint(ctx, ckpt_name, load_svd_checkpoint))


class SVD_img2vid_Conditioning(Node):
    """Conditioning for Stable Video Diffusion from a start image, and the empty clip latent to sample."""

    DISPLAY_NAME = "SVD_img2vid_Conditioning"  # ComfyUI gives it no display name
    CATEGORY = "conditioning/video_models"
    INPUTS = {"clip_vision": Link(CLIP_VISION), "init_image": Link("IMAGE"), "vae": Link("VAE"),
              "width": Int(1024, min=16, max=MAX_SIZE, step=8),
              "height": Int(576, min=16, max=MAX_SIZE, step=8),
              "video_frames": Int(14, min=1, max=4096, step=None),
              "motion_bucket_id": Int(127, min=1, max=1023, step=None),
              "fps": Int(6, min=1, max=1024, step=None),
              "augmentation_level": Float(0.0, min=0.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"),
               Output("LATENT", name="latent"))

    def execute(self, ctx: ExecutionContext, clip_vision: Any, init_image: Any, vae: Any, width: int, height: int,
                video_frames: int, motion_bucket_id: int, fps: int, augmentation_level: float) -> tuple:
        import torch

        with ctx.models.use(clip_vision) as (vision,):
            if not isinstance(vision, ClipVision):
                raise TypeError("clip_vision must come from ImageOnlyCheckpointLoader or CLIPVisionLoader; connect "
                                "that node's CLIP_VISION output")
            with ctx.devices.use(vision.model):
                output = encode_clip_vision(vision, init_image, ctx.devices.device, ctx.devices.dtype)
        pooled = output.image_embeds.unsqueeze(0)
        pixels = resample(init_image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)[..., :3]
        if augmentation_level > 0:  # ComfyUI draws this noise unseeded; a fixed seed keeps runs repeatable
            gen = torch.Generator("cpu").manual_seed(0)
            pixels = pixels + torch.randn(pixels.shape, generator=gen) * augmentation_level
        with ctx.models.use(vae) as (model,):
            latent = vae_encode(ctx, model, pixels)
        extras = {"motion_bucket_id": motion_bucket_id, "fps": fps, "augmentation_level": augmentation_level}
        positive = [(pooled, dict(extras, concat_latent_image=latent))]
        negative = [(torch.zeros_like(pooled), dict(extras, concat_latent_image=torch.zeros_like(latent)))]
        empty = torch.zeros(video_frames, 4, height // 8, width // 8)
        return positive, negative, {"samples": empty, "downscale": 8}


def _video_cfg(ctx: ExecutionContext, model: Any, min_cfg: float, shape: str, node: str) -> tuple[Any]:
    """The MODEL with per-frame guidance; refused for models whose sampler would ignore it."""
    family = getattr(ctx.models.get(model), "family", "unet")
    if family != "svd":
        raise ValueError(f"{node}: this MODEL is a {family} model; per-frame guidance applies to Stable Video "
                         "Diffusion models (ImageOnlyCheckpointLoader) only here: remove the node for this model")
    return (with_video_cfg(model, min_cfg, shape),)


class VideoLinearCFGGuidance(Node):
    """Classifier-free guidance rising linearly along the clip: min_cfg on the first frame, the sampler's cfg on the
    last."""

    CATEGORY = "sampling/video_models"
    INPUTS = {"model": Link("MODEL"), "min_cfg": Float(1.0, min=0.0, max=100.0, step=0.5, round=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: ExecutionContext, model: Any, min_cfg: float) -> tuple[Any]:
        return _video_cfg(ctx, model, min_cfg, "linear", "VideoLinearCFGGuidance")


class VideoTriangleCFGGuidance(Node):
    """Classifier-free guidance along the clip as a triangle: min_cfg at both ends, the sampler's cfg mid-clip."""

    CATEGORY = "sampling/video_models"
    INPUTS = {"model": Link("MODEL"), "min_cfg": Float(1.0, min=0.0, max=100.0, step=0.5, round=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx: ExecutionContext, model: Any, min_cfg: float) -> tuple[Any]:
        return _video_cfg(ctx, model, min_cfg, "triangle", "VideoTriangleCFGGuidance")


class ImageOnlyCheckpointSave(Node):
    """Save an image-to-video model (MODEL, CLIP vision, VAE; merges and LoRAs applied) as one checkpoint file in
    the output folder, in ComfyUI's layout."""

    DISPLAY_NAME = "ImageOnlyCheckpointSave"  # ComfyUI gives it no display name
    CATEGORY = "advanced/model_merging"
    OUTPUT_NODE = True
    INPUTS = {"model": Link("MODEL"), "clip_vision": Link(CLIP_VISION), "vae": Link("VAE"),
              "filename_prefix": String("checkpoints/ComfyUI",
                                        tooltip="file name prefix in the output folder; may include a subfolder")}
    OUTPUTS = ()

    def execute(self, ctx: ExecutionContext, model: Any, clip_vision: Any, vae: Any,
                filename_prefix: str = "checkpoints/ComfyUI") -> NodeOutput:
        return NodeOutput((), {"checkpoints": [save_svd_checkpoint(ctx, model, clip_vision, vae, filename_prefix)]})


@hookimpl
def nodegraph_nodes():
    """The Stable Video Diffusion nodes."""
    return [ImageOnlyCheckpointLoader, SVD_img2vid_Conditioning, VideoLinearCFGGuidance, VideoTriangleCFGGuidance,
            ImageOnlyCheckpointSave]
