"""Stable Cascade nodes (ComfyUI's nodes_stable_cascade.py and ModelSamplingStableCascade).

Stage C (the prior) and stage B (the decoder) load with CheckpointLoaderSimple (the all-in-one
``stable_cascade_stage_c/b.safetensors``) or UNETLoader, CLIP-G with CLIPLoader type ``stable_cascade``, stage A with
VAELoader; both stages sample with KSampler. StableCascade_EmptyLatentImage gives both stages' empty latents,
StableCascade_StageB_Conditioning hands stage C's result to stage B.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nodegraph.api import Float, Int, Link, Node, Output, derive, hookimpl, resample

MAX_RESOLUTION = 16384


class StableCascade_EmptyLatentImage(Node):
    """Empty latents for both stages: stage C's 16 channels at 1/compression, stage B's 4 channels at 1/4."""

    DISPLAY_NAME = "StableCascade_EmptyLatentImage"
    CATEGORY = "latent/stable_cascade"
    INPUTS = {"width": Int(1024, min=256, max=MAX_RESOLUTION, step=8),
              "height": Int(1024, min=256, max=MAX_RESOLUTION, step=8),
              "compression": Int(42, min=4, max=128, step=1,
                                 tooltip="pixels per stage C latent cell (42 at 1024², 32 for more detail)"),
              "batch_size": Int(1, min=1, max=4096)}
    OUTPUTS = (Output("LATENT", name="stage_c"), Output("LATENT", name="stage_b"))

    def execute(self, ctx, width: int, height: int, compression: int, batch_size: int = 1):
        import torch

        c = torch.zeros([batch_size, 16, height // compression, width // compression])
        b = torch.zeros([batch_size, 4, height // 4, width // 4])
        return ({"samples": c}, {"samples": b})


def _encode(ctx: Any, vae: Any, pixels: Any) -> Any:
    """IMAGE [B, H, W, 3] → the VAE's unscaled latents."""
    import torch

    with ctx.models.use(vae) as (loaded,), ctx.devices.use(loaded.vae), torch.no_grad():
        param = next(loaded.vae.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        x = pixels[..., :3].movedim(-1, 1).to(ctx.devices.device, dtype) * 2.0 - 1.0
        return loaded.vae.encode(x).latent_dist.mean.float().cpu()


class StableCascade_StageC_VAEEncode(Node):
    """Encode an image into a stage C latent (the EfficientNet encoder of stage C's checkpoint) for image-to-image,
    with an empty stage B latent of the matching size."""

    DISPLAY_NAME = "StableCascade_StageC_VAEEncode"
    CATEGORY = "latent/stable_cascade"
    INPUTS = {"image": Link("IMAGE"), "vae": Link("VAE"),
              "compression": Int(42, min=4, max=128, step=1)}
    OUTPUTS = (Output("LATENT", name="stage_c"), Output("LATENT", name="stage_b"))

    def execute(self, ctx, image: Any, vae: Any, compression: int):
        import torch

        height, width = image.shape[-3], image.shape[-2]
        down = ctx.models.get(vae).downscale
        out_w, out_h = (width // compression) * down, (height // compression) * down
        if out_w == 0 or out_h == 0:
            raise ValueError(f"the image is {width}x{height}, smaller than one stage C cell ({compression} pixels); "
                             "scale it up or lower compression")
        scaled = resample(image.movedim(-1, 1), out_w, out_h, "bicubic", "center").movedim(1, -1)
        c = _encode(ctx, vae, scaled)
        b = torch.zeros([c.shape[0], 4, (height // 8) * 2, (width // 8) * 2])
        return ({"samples": c}, {"samples": b})


class StableCascade_StageB_Conditioning(Node):
    """Hand stage C's sampled latent to stage B: each entry carries it as ``stable_cascade_prior``."""

    DISPLAY_NAME = "StableCascade_StageB_Conditioning"
    CATEGORY = "conditioning/stable_cascade"
    INPUTS = {"conditioning": Link("CONDITIONING"), "stage_c": Link("LATENT")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning: list, stage_c: dict):
        return ([(emb, {**extras, "stable_cascade_prior": stage_c["samples"]}) for emb, extras in conditioning],)


class StableCascade_SuperResolutionControlnet(Node):
    """The inputs of Stable Cascade's super-resolution ControlNet: the image's stage A latent as an IMAGE, and empty
    stage C/B latents at 1/16 and 1/2 of the image (the ControlNet itself is not supported here)."""

    DISPLAY_NAME = "StableCascade_SuperResolutionControlnet"
    CATEGORY = "_for_testing/stable_cascade"
    INPUTS = {"image": Link("IMAGE"), "vae": Link("VAE")}
    OUTPUTS = (Output("IMAGE", name="controlnet_input"), Output("LATENT", name="stage_c"),
               Output("LATENT", name="stage_b"))

    def execute(self, ctx, image: Any, vae: Any):
        import torch

        height, width, batch = image.shape[-3], image.shape[-2], image.shape[0]
        control = _encode(ctx, vae, image).movedim(1, -1)
        c = torch.zeros([batch, 16, height // 16, width // 16])
        b = torch.zeros([batch, 4, height // 2, width // 2])
        return (control, {"samples": c}, {"samples": b})


class ModelSamplingStableCascade(Node):
    """Set a Stable Cascade stage's noise shift (StableCascadeSampling; stage C's default is 2, stage B's 1)."""

    DISPLAY_NAME = "ModelSamplingStableCascade"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "shift": Float(2.0, min=0.0, max=100.0, step=0.01,
                             tooltip="higher spends more of the steps at high noise")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, shift: float):
        loaded = ctx.models.get(model)
        if loaded.family != "stable_cascade":
            raise ValueError(f"ModelSamplingStableCascade applies to Stable Cascade stage C/B models; {loaded.arch} "
                             "is not one. Remove the node, or use ModelSamplingDiscrete/ModelSamplingAuraFlow")
        return (derive(model, flow=dataclasses.replace(loaded.flow, shift=float(shift))),)


@hookimpl
def nodegraph_nodes():
    """The Stable Cascade nodes."""
    return [StableCascade_EmptyLatentImage, StableCascade_StageC_VAEEncode, StableCascade_StageB_Conditioning,
            StableCascade_SuperResolutionControlnet, ModelSamplingStableCascade]
