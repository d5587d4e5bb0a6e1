"""Flow-matching image families (Flux.1, SD3/SD3.5): latents, guidance, text and model-sampling nodes, with ComfyUI's
names."""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    Combo,
    Float,
    Int,
    Link,
    Node,
    Output,
    String,
    derive,
    encode_flux_text,
    encode_sd3_text,
    flux_shift,
    hookimpl,
    model_patches,
    resample,
    with_patch,
    with_t5_options,
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


class InstructPixToPixConditioning(Node):
    """Encode an image the model edits or follows: its latent as ``concat_latent_image`` on both conditionings
    (InstructPix2Pix models, Flux Canny/Depth control models) and an empty latent of its size."""

    DISPLAY_NAME = "InstructPixToPixConditioning"
    CATEGORY = "conditioning/instructpix2pix"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              "pixels": Link("IMAGE")}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, pixels: Any):
        import torch

        from .latent import encode

        h, w = int(pixels.shape[1]), int(pixels.shape[2])
        nh, nw = (h // 8) * 8, (w // 8) * 8  # ComfyUI crops to a multiple of 8, centred
        if (nh, nw) != (h, w):
            y0, x0 = (h % 8) // 2, (w % 8) // 2
            pixels = pixels[:, y0:y0 + nh, x0:x0 + nw, :]
        with ctx.models.use(vae) as (loaded,):
            concat = encode(ctx, loaded, pixels)
            downscale = loaded.downscale
        out = [[(emb, dict(extras, concat_latent_image=concat)) for emb, extras in cond]
               for cond in (positive, negative)]
        return (out[0], out[1], {"samples": torch.zeros_like(concat), "downscale": downscale})


class CFGNorm(Node):
    """Scale the guided prediction down to the positive prediction's norm per pixel (Qwen-Image-Edit's examples)."""

    DISPLAY_NAME = "CFGNorm"
    CATEGORY = "advanced/guidance"
    INPUTS = {"model": Link("MODEL"), "strength": Float(1.0, min=0.0, max=100.0, step=0.01)}
    OUTPUTS = (Output("MODEL", "patched_model"),)

    def execute(self, ctx, model, strength: float):
        return (with_patch(model, model_patches.CFGNorm(float(strength))),)


class T5TokenizerOptions(Node):
    """Set how T5 prompts are padded: at least min_padding pad tokens, then up to min_length tokens (0: none)."""

    DISPLAY_NAME = "T5TokenizerOptions"
    CATEGORY = "_for_testing/conditioning"
    INPUTS = {"clip": Link("CLIP"), "min_padding": Int(0, min=0, max=10000, step=1),
              "min_length": Int(0, min=0, max=10000, step=1)}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx, clip, min_padding: int, min_length: int):
        return (with_t5_options(clip, min_padding, min_length),)


class ControlNetApplySD3(Node):
    """Attach a ControlNet with its hint image (and the VAE, for ControlNets whose hint is a latent) to the positive
    and negative conditionings for a part of the sampling (ComfyUI's older "Apply Controlnet with VAE")."""

    DISPLAY_NAME = "Apply Controlnet with VAE"
    CATEGORY = "conditioning/controlnet"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "control_net": Link("CONTROL_NET"),
              "vae": Link("VAE"), "image": Link("IMAGE"),
              "strength": Float(1.0, min=0.0, max=10.0, step=0.01),
              "start_percent": Float(0.0, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(1.0, min=0.0, max=1.0, step=0.001)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def execute(self, ctx, positive: list, negative: list, control_net: Any, vae: Any, image: Any, strength: float,
                start_percent: float, end_percent: float):
        from .controlnet import _apply

        if strength == 0:
            return (positive, negative)
        pos, neg = _apply([positive, negative], control_net, image, strength, start_percent, end_percent, vae)
        return (pos, neg)


def _flow_of(ctx: Any, model: Any, node: str, families: str = "SD3, Flux") -> Any:
    flow = ctx.models.get(model).flow
    if flow is None:
        raise ValueError(f"{node} applies to flow-matching models ({families}); {model.arch} is not one. Remove the "
                         "node, or load such a model with UNETLoader or CheckpointLoaderSimple")
    return flow


class ModelSamplingSD3(Node):
    """Set a flow model's noise shift (SD3/SD3.5: 3.0 by default; higher spends more steps at high noise)."""

    DISPLAY_NAME = "ModelSamplingSD3"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"), "shift": Float(3.0, min=0.0, max=100.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)
    MULTIPLIER = 1000.0
    FAMILIES = "SD3, Flux"  # named in the error for a model that is not flow matching

    def execute(self, ctx, model, shift: float):
        import dataclasses

        flow = _flow_of(ctx, model, type(self).__name__, self.FAMILIES)
        return (derive(model, flow=dataclasses.replace(flow, kind="discrete", shift=float(shift),
                                                       multiplier=self.MULTIPLIER)),)


class CLIPTextEncodeSD3(Node):
    """Encode separate prompts for SD3's CLIP-L, CLIP-G and T5-XXL."""

    DISPLAY_NAME = "CLIPTextEncodeSD3"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"clip": Link("CLIP"),
              "clip_l": String("", multiline=True, dynamic_prompts=True),
              "clip_g": String("", multiline=True, dynamic_prompts=True),
              "t5xxl": String("", multiline=True, dynamic_prompts=True),
              "empty_padding": Combo(("none", "empty_prompt"))}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, clip, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str):
        return (encode_sd3_text(ctx, clip, clip_l, clip_g, t5xxl, empty_padding),)


class SkipLayerGuidanceSD3(Node):
    """Push the image away from a prediction with some transformer blocks skipped (SD3.5's skip-layer guidance)."""

    DISPLAY_NAME = "SkipLayerGuidanceSD3"
    CATEGORY = "advanced/guidance"
    INPUTS = {"model": Link("MODEL"),
              "layers": String("7, 8, 9", multiline=False),
              "scale": Float(3.0, min=0.0, max=10.0, step=0.1),
              "start_percent": Float(0.01, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(0.15, min=0.0, max=1.0, step=0.001)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, layers: str, scale: float, start_percent: float, end_percent: float):
        import dataclasses

        flow = _flow_of(ctx, model, "SkipLayerGuidanceSD3")
        if ctx.models.get(model).family != "sd3":
            raise ValueError(f"SkipLayerGuidanceSD3 applies to SD3/SD3.5 transformers; {model.arch} is not one. "
                             "Remove the node")
        try:
            blocks = tuple(int(part) for part in layers.replace(" ", "").split(",") if part)
        except ValueError:
            raise ValueError(f"SkipLayerGuidanceSD3: layers {layers!r} must be block numbers separated by commas, "
                             "e.g. 7, 8, 9") from None
        if not blocks or scale == 0:
            return (model,)
        slg = (blocks, float(scale), float(start_percent), float(end_percent))
        return (derive(model, flow=dataclasses.replace(flow, skip_layer_guidance=slg)),)


@hookimpl
def nodegraph_nodes():
    """The flow-matching family nodes."""
    return [EmptySD3LatentImage, ModelSamplingFlux, FluxGuidance, FluxDisableGuidance, CLIPTextEncodeFlux,
            FluxKontextImageScale, ReferenceLatent, InstructPixToPixConditioning, CFGNorm, T5TokenizerOptions,
            ControlNetApplySD3, ModelSamplingSD3, CLIPTextEncodeSD3, SkipLayerGuidanceSD3]
