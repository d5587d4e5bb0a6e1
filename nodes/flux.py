"""Flow-matching image families (Flux.1 first): latents, guidance and model-sampling nodes, with ComfyUI's names."""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    Float,
    Int,
    Link,
    Node,
    Output,
    String,
    derive,
    encode_flux_text,
    flux_shift,
    hookimpl,
    resample,
)

MAX_RESOLUTION = 16384
#: Flux Kontext's preferred (width, height) sizes (ComfyUI's list), about one megapixel each.
KONTEXT_SIZES = ((672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                 (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                 (1456, 720), (1504, 688), (1568, 672))


def _with_extras(conditioning: list, **values: Any) -> list:
    """A copy of ``conditioning`` with ``values`` set in every entry's extras (tensors shared)."""
    return [(emb, dict(extras, **values)) for emb, extras in conditioning]


class EmptySD3LatentImage(Node):
    """A batch of empty 16-channel latents (SD3, Flux) for text-to-image."""

    DISPLAY_NAME = "EmptySD3LatentImage"
    CATEGORY = "latent/sd3"
    INPUTS = {"width": Int(1024, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(1024, min=16, max=MAX_RESOLUTION, step=16),
              "batch_size": Int(1, min=1, max=4096)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, batch_size: int):
        import torch

        samples = torch.zeros(batch_size, 16, height // 8, width // 8)
        return ({"samples": samples, "pixel_size": (height, width), "downscale": 8},)


class ModelSamplingFlux(Node):
    """Set a Flux model's noise shift from the image size (base_shift at 256 latent tokens, max_shift at 4096)."""

    DISPLAY_NAME = "ModelSamplingFlux"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "max_shift": Float(1.15, min=0.0, max=100.0, step=0.01),
              "base_shift": Float(0.5, min=0.0, max=100.0, step=0.01),
              "width": Int(1024, min=16, max=MAX_RESOLUTION, step=8),
              "height": Int(1024, min=16, max=MAX_RESOLUTION, step=8)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, max_shift: float, base_shift: float, width: int, height: int):
        import dataclasses

        flow = ctx.models.get(model).flow
        if flow is None:
            raise ValueError(f"ModelSamplingFlux applies to flow-matching models (Flux); {model.arch} is not one. "
                             "Remove the node, or load a Flux model with UNETLoader")
        shift = flux_shift(width, height, max_shift, base_shift)
        return (derive(model, flow=dataclasses.replace(flow, kind="flux", shift=shift)),)


class FluxGuidance(Node):
    """Set the distilled guidance strength Flux.1-dev is conditioned on (3.5 by default)."""

    DISPLAY_NAME = "FluxGuidance"
    CATEGORY = "advanced/conditioning/flux"
    INPUTS = {"conditioning": Link("CONDITIONING"), "guidance": Float(3.5, min=0.0, max=100.0, step=0.1)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning: list, guidance: float):
        return (_with_extras(conditioning, guidance=guidance),)


class FluxDisableGuidance(Node):
    """Leave the guidance embedding unset (the model's default applies)."""

    DISPLAY_NAME = "FluxDisableGuidance"
    CATEGORY = "advanced/conditioning/flux"
    INPUTS = {"conditioning": Link("CONDITIONING")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning: list):
        return (_with_extras(conditioning, guidance=None),)


class CLIPTextEncodeFlux(Node):
    """Encode separate prompts for Flux's CLIP-L and T5-XXL, with the distilled guidance strength."""

    DISPLAY_NAME = "CLIPTextEncodeFlux"
    CATEGORY = "advanced/conditioning/flux"
    INPUTS = {"clip": Link("CLIP"),
              "clip_l": String("", multiline=True, dynamic_prompts=True),
              "t5xxl": String("", multiline=True, dynamic_prompts=True),
              "guidance": Float(3.5, min=0.0, max=100.0, step=0.1)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip, clip_l: str, t5xxl: str, guidance: float):
        return (_with_extras(encode_flux_text(ctx, clip, clip_l, t5xxl), guidance=guidance),)


class FluxKontextImageScale(Node):
    """Resize an image to the Flux Kontext size nearest its aspect ratio (Lanczos, centre crop)."""

    DISPLAY_NAME = "FluxKontextImageScale"
    CATEGORY = "advanced/conditioning/flux"
    INPUTS = {"image": Link("IMAGE")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image):
        height, width = int(image.shape[1]), int(image.shape[2])
        aspect = width / height
        _, w, h = min((abs(aspect - w / h), w, h) for w, h in KONTEXT_SIZES)
        out = resample(image.movedim(-1, 1), w, h, "lanczos", "center").movedim(1, -1)
        return (out.clamp(0.0, 1.0).contiguous(),)


class ReferenceLatent(Node):
    """Attach a reference latent to the conditioning (Flux Kontext edits the image it shows)."""

    DISPLAY_NAME = "ReferenceLatent"
    CATEGORY = "advanced/conditioning/edit_models"
    INPUTS = {"conditioning": Link("CONDITIONING"), "latent": Link("LATENT", optional=True)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning: list, latent: dict | None = None):
        if latent is None:
            return (conditioning,)
        return ([(emb, dict(extras, reference_latents=list(extras.get("reference_latents") or [])
                            + [latent["samples"]])) for emb, extras in conditioning],)


@hookimpl
def nodegraph_nodes():
    """The flow-matching family nodes."""
    return [EmptySD3LatentImage, ModelSamplingFlux, FluxGuidance, FluxDisableGuidance, CLIPTextEncodeFlux,
            FluxKontextImageScale, ReferenceLatent]
