"""Image-prompted conditioning: CLIP vision, unCLIP and style models (ComfyUI's names, inputs and semantics).

``CLIPVisionLoader`` reads a CLIP vision file (ComfyUI's or the OpenCLIP layout); ``CLIPVisionEncode`` makes a
CLIP_VISION_OUTPUT (hidden states and the projected image embedding). ``unCLIPCheckpointLoader`` loads an
SD2.1-unCLIP checkpoint with its image encoder; ``unCLIPConditioning`` attaches image embeddings, which sampling
feeds to the UNet's class embedding (``nodegraph.diffusion.unclip``). ``StyleModelLoader``/``StyleModelApply``
append a style model's image tokens to the text embeddings (the T2I-Adapter style model for SD1.x, Redux
for Flux with a SigLIP CLIPVisionLoader file).
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    CONDITIONING,
    IMAGE,
    ClipVision,
    ClipVisionOutput,
    Combo,
    ExecutionContext,
    Float,
    Gligen,
    GligenBox,
    Int,
    Link,
    ModelCombo,
    Node,
    Output,
    String,
    StyleModel,
    apply_style,
    encode_clip_vision,
    hookimpl,
    list_models,
    load_clip_vision,
    load_gligen_file,
    load_style_model,
    load_unclip_checkpoint,
    phrase_embedding,
    unclip_parts,
)

from .image_ops import MAX_SIZE
from .loaders import ModelFileNode

CLIP_VISION = "CLIP_VISION"
CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
STYLE_MODEL = "STYLE_MODEL"
GLIGEN = "GLIGEN"


def _load(ctx: ExecutionContext, folder: str, name: str, load: Any) -> Any:
    """A handle to ``load(path, allow_pickle, name)`` of model ``name`` in ``folder``, held by the model manager."""
    path = ctx.models.resolve(folder, name)
    ctx.models.check_loadable(path)
    allow = bool(ctx.config.allow_unsafe_pickle)
    return ctx.models.load_file(folder, name, lambda: load(path, allow, name))


def load_checkpoint(ctx: ExecutionContext, ckpt_name: str, load: Any) -> Any:
    """A handle to ``load(path, config, name=, dtype=)`` of checkpoint ``ckpt_name`` (the device dtype off CPU),
    held by the model manager."""
    path = ctx.models.resolve("checkpoints", ckpt_name)
    ctx.models.check_loadable(path)
    device = ctx.devices.device
    dtype = ctx.devices.dtype if getattr(device, "type", "cpu") != "cpu" else None
    return ctx.models.load_file("checkpoints", ckpt_name, lambda: load(path, ctx.config, name=ckpt_name,
                                                                       dtype=dtype))


def _names(folder: str):
    def names(config: Any) -> list[str]:
        return list_models(config, folder)

    names.__doc__ = f"Model files under models/{folder}."
    return names


def _check(value: Any, cls: type, what: str, source: str) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"{what} must come from {source} (got {type(value).__name__}); connect that node's output")


class CLIPVisionLoader(ModelFileNode):
    """Load a CLIP vision model (ViT-L/14, ViT-H/14, ViT-bigG/14, SigLIP or another ViT) from models/clip_vision."""

    DISPLAY_NAME = "Load CLIP Vision"
    CATEGORY = "loaders"
    MODEL_INPUT = ("clip_name", "clip_vision")
    INPUTS = {"clip_name": ModelCombo("clip_vision", _names("clip_vision"))}
    OUTPUTS = (Output(CLIP_VISION),)

    def execute(self, ctx: ExecutionContext, clip_name: str) -> tuple[Any]:
        return (_load(ctx, "clip_vision", clip_name, load_clip_vision),)


class CLIPVisionEncode(Node):
    """Encode an image with a CLIP vision model (centre-cropped to a square, or resized whole with crop = none)."""

    DISPLAY_NAME = "CLIP Vision Encode"
    CATEGORY = "conditioning"
    INPUTS = {"clip_vision": Link(CLIP_VISION), "image": Link("IMAGE"), "crop": Combo(["center", "none"])}
    OUTPUTS = (Output(CLIP_VISION_OUTPUT),)

    def execute(self, ctx: ExecutionContext, clip_vision: Any, image: IMAGE, crop: str) -> tuple[ClipVisionOutput]:
        with ctx.models.use(clip_vision) as (vision,):
            _check(vision, ClipVision, "clip_vision", "CLIPVisionLoader or unCLIPCheckpointLoader")
            with ctx.devices.use(vision.model):
                return (encode_clip_vision(vision, image, ctx.devices.device, ctx.devices.dtype,
                                           crop=crop == "center"),)


class unCLIPCheckpointLoader(ModelFileNode):
    """Load an SD2.1-unCLIP checkpoint: MODEL, CLIP, VAE and the CLIP vision model whose embeddings it takes."""

    DISPLAY_NAME = "unCLIPCheckpointLoader"  # ComfyUI gives it no display name
    CATEGORY = "loaders"
    MODEL_INPUT = ("ckpt_name", "checkpoints")
    INPUTS = {"ckpt_name": ModelCombo("checkpoints", _names("checkpoints"))}
    OUTPUTS = (Output("MODEL"), Output("CLIP"), Output("VAE"), Output(CLIP_VISION))

    def execute(self, ctx: ExecutionContext, ckpt_name: str) -> tuple[Any, Any, Any, Any]:
        return unclip_parts(load_checkpoint(ctx, ckpt_name, load_unclip_checkpoint))


class unCLIPConditioning(Node):
    """Attach a CLIP vision image embedding to a conditioning for an unCLIP model (several add up)."""

    DISPLAY_NAME = "unCLIPConditioning"  # ComfyUI gives it no display name
    CATEGORY = "conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"), "clip_vision_output": Link(CLIP_VISION_OUTPUT),
              "strength": Float(1.0, min=-10.0, max=10.0, step=0.01),
              "noise_augmentation": Float(0.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, clip_vision_output: Any, strength: float,
                noise_augmentation: float) -> tuple[CONDITIONING]:
        _check(clip_vision_output, ClipVisionOutput, "clip_vision_output", "CLIPVisionEncode")
        if strength == 0:
            return (conditioning,)
        item = {"clip_vision_output": clip_vision_output, "strength": float(strength),
                "noise_augmentation": float(noise_augmentation)}
        return ([(emb, {**extras, "unclip_conditioning": list(extras.get("unclip_conditioning") or []) + [item]})
                 for emb, extras in conditioning],)


class StyleModelLoader(ModelFileNode):
    """Load a style model (the T2I-Adapter style model, or Flux Redux) from models/style_models."""

    DISPLAY_NAME = "Load Style Model"
    CATEGORY = "loaders"
    MODEL_INPUT = ("style_model_name", "style_models")
    INPUTS = {"style_model_name": ModelCombo("style_models", _names("style_models"))}
    OUTPUTS = (Output(STYLE_MODEL),)

    def execute(self, ctx: ExecutionContext, style_model_name: str) -> tuple[Any]:
        return (_load(ctx, "style_models", style_model_name, load_style_model),)


class StyleModelApply(Node):
    """Append a style model's image tokens to every entry of a conditioning."""

    DISPLAY_NAME = "Apply Style Model"
    CATEGORY = "conditioning/style_model"
    INPUTS = {"conditioning": Link("CONDITIONING"), "style_model": Link(STYLE_MODEL),
              "clip_vision_output": Link(CLIP_VISION_OUTPUT),
              "strength": Float(1.0, min=0.0, max=10.0, step=0.001),
              "strength_type": Combo(["multiply", "attn_bias"])}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, style_model: Any, clip_vision_output: Any,
                strength: float, strength_type: str) -> tuple[CONDITIONING]:
        _check(clip_vision_output, ClipVisionOutput, "clip_vision_output", "CLIPVisionEncode")
        with ctx.models.use(style_model) as (model,):
            _check(model, StyleModel, "style_model", "StyleModelLoader")
            tokens = model.get_cond(clip_vision_output)
        return (apply_style(list(conditioning), tokens, float(strength), strength_type),)


class GLIGENLoader(ModelFileNode):
    """Load a GLIGEN grounding model (position net + gated self-attention layers) from models/gligen."""

    CATEGORY = "loaders"
    MODEL_INPUT = ("gligen_name", "gligen")
    INPUTS = {"gligen_name": ModelCombo("gligen", _names("gligen"))}
    OUTPUTS = (Output(GLIGEN),)

    def execute(self, ctx: ExecutionContext, gligen_name: str) -> tuple[Any]:
        return (_load(ctx, "gligen", gligen_name, load_gligen_file),)


_BOX = dict(min=0, max=MAX_SIZE, step=8)


class GLIGENTextBoxApply(Node):
    """Ground a phrase in a box (pixels) of every entry of a conditioning: GLIGEN places it there while sampling."""

    CATEGORY = "conditioning/gligen"
    INPUTS = {"conditioning_to": Link("CONDITIONING"), "clip": Link("CLIP"), "gligen_textbox_model": Link(GLIGEN),
              "text": String("", multiline=True, dynamic_prompts=True, tooltip="the phrase drawn in the box"),
              "width": Int(64, min=8, max=MAX_SIZE, step=8), "height": Int(64, min=8, max=MAX_SIZE, step=8),
              "x": Int(0, **_BOX), "y": Int(0, **_BOX)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning_to: CONDITIONING, clip: Any, gligen_textbox_model: Any,
                text: str, width: int, height: int, x: int, y: int) -> tuple[CONDITIONING]:
        with ctx.models.use(clip, gligen_textbox_model) as (encoder, gligen):
            _check(gligen, Gligen, "gligen_textbox_model", "GLIGENLoader")
            box = GligenBox(phrase_embedding(encoder, text), height, width, y, x)
        out = []
        for emb, extras in conditioning_to:
            previous = list(extras["gligen"][2]) if "gligen" in extras else []
            out.append((emb, {**extras, "gligen": ("position", gligen, previous + [box])}))
        return (out,)


@hookimpl
def nodegraph_types():
    """CLIP_VISION, CLIP_VISION_OUTPUT and STYLE_MODEL."""
    return {GLIGEN: "a GLIGEN grounding model (GLIGENLoader)",
            CLIP_VISION: "a CLIP vision image encoder (CLIPVisionLoader, unCLIPCheckpointLoader)",
            CLIP_VISION_OUTPUT: "an image's CLIP vision encoding (CLIPVisionEncode)",
            STYLE_MODEL: "a style model turning a CLIP vision encoding into conditioning tokens (StyleModelLoader)"}


@hookimpl
def nodegraph_nodes():
    """The image-prompt conditioning nodes."""
    return [CLIPVisionLoader, CLIPVisionEncode, unCLIPCheckpointLoader, unCLIPConditioning, StyleModelLoader,
            StyleModelApply, GLIGENLoader, GLIGENTextBoxApply]
