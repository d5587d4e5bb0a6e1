"""ControlNet and T2I-Adapter nodes, and the Canny preprocessor (ComfyUI's names, inputs and semantics).

``ControlNetLoader`` reads a ControlNet or T2I-Adapter (diffusers folder, or one .safetensors file in diffusers' or
the original layout); ``ControlNetApplyAdvanced`` attaches it with a hint image to both conditionings, chained after
any ControlNet already there; sampling adds the residuals within the step range (``nodegraph.diffusion.controlnet``).
``Canny`` uses kornia's Canny, the implementation (and threshold convention) of ComfyUI's node.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (
    CONDITIONING,
    IMAGE,
    UNION_TYPES,
    Combo,
    ControlNet,
    ExecutionContext,
    Float,
    Link,
    ModelCombo,
    Node,
    Output,
    canny_edges,
    controlnet_names,
    file_fingerprint,
    hookimpl,
    load_control_model,
    model_path,
)

CONTROL_NET = "CONTROL_NET"


class _ControlNetFile(Node):
    """Reads one file of models/controlnet; its fingerprint and path feed the cache key and provenance."""

    @classmethod
    def fingerprint(cls, config, **constants):
        try:
            return file_fingerprint(model_path(config, "controlnet", str(constants.get("control_net_name"))))
        except (OSError, ValueError):
            return ("missing", constants.get("control_net_name"))

    @classmethod
    def model_files(cls, config, **constants):
        try:
            return [str(model_path(config, "controlnet", str(constants.get("control_net_name"))))]
        except (OSError, ValueError):
            return []


def _load(ctx: ExecutionContext, name: str, base: Any = None) -> ControlNet:
    path = ctx.models.resolve("controlnet", name)
    allow = bool(ctx.config.allow_unsafe_pickle)
    ctx.models.check_loadable(path)
    unet = None
    if base is not None:
        unet = ctx.models.get(base).unet
    handle = ctx.models.load_file("controlnet", name, lambda: load_control_model(path, allow, unet))
    return ControlNet(handle)


class ControlNetLoader(_ControlNetFile):
    """Load a ControlNet or T2I-Adapter (a .safetensors file or a diffusers folder in models/controlnet)."""

    DISPLAY_NAME = "Load ControlNet Model"
    CATEGORY = "loaders"
    INPUTS = {"control_net_name": ModelCombo("controlnet", controlnet_names,
                                             tooltip="a ControlNet or T2I-Adapter in models/controlnet; "
                                                     "nodegraph-shapes-canny-v1 steers the built-in model")}
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, ctx: ExecutionContext, control_net_name: str) -> tuple[ControlNet]:
        return (_load(ctx, control_net_name),)


class DiffControlNetLoader(_ControlNetFile):
    """Load a ControlNet; a "diff" ControlNet (stored as the difference to its base model) is completed with
    ``model``'s UNet weights."""

    DISPLAY_NAME = "Load ControlNet Model (diff)"
    CATEGORY = "loaders"
    INPUTS = {"model": Link("MODEL"),
              "control_net_name": ModelCombo("controlnet", controlnet_names)}
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, ctx: ExecutionContext, model: Any, control_net_name: str) -> tuple[ControlNet]:
        return (_load(ctx, control_net_name, model),)


_STRENGTH = Float(1.0, min=0.0, max=10.0, step=0.01)


def _apply(conditionings: list[CONDITIONING], control_net: ControlNet, image: IMAGE, strength: float,
           start_percent: float, end_percent: float, vae: Any = None) -> list[CONDITIONING]:
    """Each conditioning with ``control_net`` chained after the entries' own (one copy per previous chain)."""
    if not isinstance(control_net, ControlNet):
        raise TypeError("control_net must come from ControlNetLoader (got "
                        f"{type(control_net).__name__}); connect a CONTROL_NET output")
    copies: dict[int, ControlNet] = {}
    out = []
    for conditioning in conditionings:
        entries = []
        for emb, extras in conditioning:
            prev = extras.get("control")
            key = id(prev)
            if key not in copies:
                copies[key] = control_net.applied(image, strength, start_percent, end_percent, prev, vae)
            entries.append((emb, {**extras, "control": copies[key], "control_apply_to_uncond": False}))
        out.append(entries)
    return out


class ControlNetApply(Node):
    """Attach a ControlNet with its hint image to one conditioning (the older node: for the whole sampling)."""

    DISPLAY_NAME = "Apply ControlNet (OLD)"
    CATEGORY = "conditioning/controlnet"
    INPUTS = {"conditioning": Link("CONDITIONING"), "control_net": Link(CONTROL_NET), "image": Link("IMAGE"),
              "strength": _STRENGTH}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, control_net: ControlNet, image: IMAGE,
                strength: float) -> tuple[CONDITIONING]:
        if strength == 0:
            return (conditioning,)
        return (_apply([conditioning], control_net, image, strength, 0.0, 1.0)[0],)


class ControlNetApplyAdvanced(Node):
    """Attach a ControlNet with its hint image to the positive and negative conditionings, for a part of the
    sampling (start/end percent: 0 = the noisiest step)."""

    DISPLAY_NAME = "Apply ControlNet"
    CATEGORY = "conditioning/controlnet"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "control_net": Link(CONTROL_NET),
              "image": Link("IMAGE", tooltip="the hint (an edge map, depth map, …) at any size; it is resized to "
                                             "the latent's pixel size"),
              "strength": _STRENGTH,
              "start_percent": Float(0.0, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(1.0, min=0.0, max=1.0, step=0.001),
              "vae": Link("VAE", optional=True, tooltip="only for ControlNets whose hint is a latent; SD1.x/SDXL "
                                                        "ControlNets and T2I-Adapters do not use it")}
    OUTPUTS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    @classmethod
    def validate_inputs(cls, config, **constants):
        start, end = constants.get("start_percent"), constants.get("end_percent")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
            return [("end_percent", f"end_percent ({end}) is before start_percent ({start}), so the ControlNet "
                                    "would never act; make end_percent ≥ start_percent")]
        return []

    def execute(self, ctx: ExecutionContext, positive: CONDITIONING, negative: CONDITIONING,
                control_net: ControlNet, image: IMAGE, strength: float, start_percent: float, end_percent: float,
                vae: Any = None) -> tuple[CONDITIONING, CONDITIONING]:
        if strength == 0:
            return (positive, negative)
        pos, neg = _apply([positive, negative], control_net, image, strength, start_percent, end_percent, vae)
        return (pos, neg)


def _concat_mask(ctx: ExecutionContext, control_net: ControlNet) -> str | None:
    """Why ``control_net`` cannot run here when it is one of ComfyUI's ``concat_mask`` ControlNets (AliMama's
    inpainting ones: the masked image's latent plus the mask as hint), else None."""
    model = ctx.models.get(control_net.model)
    module = getattr(model, "module", None)
    extra = int(getattr(getattr(module, "config", None), "extra_conditioning_channels", 0) or 0)
    if getattr(model, "kind", "") == "sd3_controlnet" and extra == 1:
        return (f"{getattr(model, 'source', 'this ControlNet')!r} is an inpainting SD3 ControlNet (AliMama's: its hint "
                "is the masked image's latent plus the mask), which nodegraph does not run yet; inpaint with "
                "InpaintModelConditioning or VAEEncodeForInpaint/SetLatentNoiseMask instead, or use an SD3 ControlNet "
                "whose hint is an image with ControlNetApplySD3")
    return None


class ControlNetInpaintingAliMamaApply(Node):
    """Apply an inpainting ControlNet (AliMama's): the hint is the image with the masked area blanked plus the mask;
    other ControlNets are applied as Apply ControlNet does (the mask unused)."""

    CATEGORY = "conditioning/controlnet"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "control_net": Link(CONTROL_NET),
              "vae": Link("VAE"), "image": Link("IMAGE"), "mask": Link("MASK"),
              "strength": _STRENGTH,
              "start_percent": Float(0.0, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(1.0, min=0.0, max=1.0, step=0.001)}
    OUTPUTS = (Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative"))

    def execute(self, ctx: ExecutionContext, positive: CONDITIONING, negative: CONDITIONING,
                control_net: ControlNet, vae: Any, image: IMAGE, mask: Any, strength: float, start_percent: float,
                end_percent: float) -> tuple[CONDITIONING, CONDITIONING]:
        if not isinstance(control_net, ControlNet):
            raise TypeError("control_net must come from ControlNetLoader (got "
                            f"{type(control_net).__name__}); connect a CONTROL_NET output")
        if strength == 0:  # as ComfyUI: nothing applied, whatever the ControlNet
            return (positive, negative)
        why = _concat_mask(ctx, control_net)
        if why is not None:
            raise ValueError(f"ControlNetInpaintingAliMamaApply: {why}")
        pos, neg = _apply([positive, negative], control_net, image, strength, start_percent, end_percent, vae)
        return (pos, neg)


class SetUnionControlNetType(Node):
    """Choose which condition a union ControlNet reads from its hint ("auto": let it decide)."""

    CATEGORY = "conditioning/controlnet"
    INPUTS = {"control_net": Link(CONTROL_NET), "type": Combo([name for name in UNION_TYPES])}
    OUTPUTS = (Output(CONTROL_NET),)

    def execute(self, ctx: ExecutionContext, control_net: ControlNet, type: str) -> tuple[ControlNet]:
        from dataclasses import replace

        number = UNION_TYPES.get(type, -1)
        return (replace(control_net, union_type=number if number >= 0 else None),)


class Canny(Node):
    """Canny edge map of an image (white edges on black), the usual hint of Canny ControlNets."""

    CATEGORY = "image/preprocessors"
    INPUTS = {"image": Link("IMAGE"),
              "low_threshold": Float(0.4, min=0.01, max=0.99, step=0.01,
                                     tooltip="edges weaker than this (gradient of the 0..1 grayscale) are dropped"),
              "high_threshold": Float(0.8, min=0.01, max=0.99, step=0.01,
                                      tooltip="edges stronger than this are kept; weaker ones only when connected")}
    OUTPUTS = (Output("IMAGE"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        low, high = constants.get("low_threshold"), constants.get("high_threshold")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            return [("low_threshold", f"low_threshold ({low}) is above high_threshold ({high}); lower it")]
        return []

    def execute(self, ctx: ExecutionContext, image: IMAGE, low_threshold: float,
                high_threshold: float) -> tuple[IMAGE]:
        return (canny_edges(image.to(ctx.devices.device), low_threshold, high_threshold).cpu(),)


@hookimpl
def nodegraph_nodes():
    """The ControlNet nodes."""
    return [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, SetUnionControlNetType,
            Canny, ControlNetInpaintingAliMamaApply]


@hookimpl
def nodegraph_types():
    """CONTROL_NET: what ControlNetLoader returns and ControlNetApply(Advanced) take."""
    return {CONTROL_NET: "a ControlNet or T2I-Adapter (ControlNetLoader), with its hint once applied"}
