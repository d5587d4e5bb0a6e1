"""Conditioning nodes: encode prompts with CLIP, choose the CLIP layer, combine, mix and place conditionings.

Area, mask, strength and timestep-range extras are read by sampling (``nodegraph.diffusion.sampling``)."""

from __future__ import annotations

from typing import Any

from nodegraph.api import (CLIP, CONDITIONING, MASK, Combo, ExecutionContext, Float, Int, Link, Node, Output, String,
                           derive, encode_prompt, hookimpl)

MAX_RESOLUTION = 16384


class CLIPTextEncode(Node):
    """Encode a text prompt with a CLIP model into conditioning that guides the diffusion model."""

    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    INPUTS = {"text": String("", multiline=True, dynamic_prompts=True, tooltip="the text to encode"),
              "clip": Link("CLIP", tooltip="the CLIP model used to encode the text")}
    OUTPUTS = (Output("CONDITIONING", tooltip="the encoded text, to guide the diffusion model"),)

    def execute(self, ctx: ExecutionContext, text: str, clip: CLIP) -> tuple[CONDITIONING]:
        return (encode_prompt(ctx, clip, text),)


class CLIPSetLastLayer(Node):
    """Stop CLIP at an earlier layer (-1 = last, -2 = penultimate, the "clip skip" of other tools)."""

    DISPLAY_NAME = "CLIP Set Last Layer"
    CATEGORY = "conditioning"
    INPUTS = {"clip": Link("CLIP"), "stop_at_clip_layer": Int(-1, min=-24, max=-1, step=1)}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx: ExecutionContext, clip: CLIP, stop_at_clip_layer: int) -> tuple[CLIP]:
        return (derive(clip, stop_at_layer=stop_at_clip_layer),)


class ConditioningCombine(Node):
    """Combine two conditionings: sampling averages the noise predictions of all their entries."""

    DISPLAY_NAME = "Conditioning (Combine)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning_1": Link("CONDITIONING"), "conditioning_2": Link("CONDITIONING")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning_1: CONDITIONING,
                conditioning_2: CONDITIONING) -> tuple[CONDITIONING]:
        return (list(conditioning_1) + list(conditioning_2),)


def _with(conditioning: CONDITIONING, **extras: Any) -> CONDITIONING:
    """A copy of ``conditioning`` with ``extras`` set on every entry (embeddings shared)."""
    return [(emb, {**d, **extras}) for emb, d in conditioning]


def _first(conditioning: CONDITIONING, what: str) -> Any:
    if not conditioning:
        raise ValueError(f"{what} is an empty conditioning list; connect a CLIPTextEncode output")
    return conditioning[0]


class ConditioningAverage(Node):
    """Blend two conditionings: to × strength + from × (1 − strength) (the first entry of ``from`` is used)."""

    DISPLAY_NAME = "Conditioning (Average)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning_to": Link("CONDITIONING"), "conditioning_from": Link("CONDITIONING"),
              "conditioning_to_strength": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning_to: CONDITIONING, conditioning_from: CONDITIONING,
                conditioning_to_strength: float) -> tuple[CONDITIONING]:
        import torch

        src, src_extras = _first(conditioning_from, "conditioning_from")
        pooled_from = src_extras.get("pooled_output")
        out = []
        for emb, extras in conditioning_to:
            part = src[:, :emb.shape[1]]
            if part.shape[1] < emb.shape[1]:
                part = torch.cat([part, torch.zeros(part.shape[0], emb.shape[1] - part.shape[1], part.shape[2],
                                                    dtype=part.dtype)], dim=1)
            if part.shape[0] != emb.shape[0] or part.shape[2] != emb.shape[2]:
                raise ValueError(f"ConditioningAverage: embeddings of shape {tuple(src.shape)} cannot be averaged "
                                 f"with {tuple(emb.shape)}; encode both prompts with the same CLIP")
            s = float(conditioning_to_strength)
            d = dict(extras)
            pooled_to = d.get("pooled_output")
            if pooled_to is not None and pooled_from is not None:
                d["pooled_output"] = pooled_to * s + pooled_from * (1.0 - s)
            elif pooled_from is not None:
                d["pooled_output"] = pooled_from
            out.append((emb * s + part * (1.0 - s), d))
        return (out,)


class ConditioningConcat(Node):
    """Append the tokens of ``from``'s first entry to every entry of ``to`` (longer prompts without averaging)."""

    DISPLAY_NAME = "Conditioning (Concat)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning_to": Link("CONDITIONING"), "conditioning_from": Link("CONDITIONING")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning_to: CONDITIONING,
                conditioning_from: CONDITIONING) -> tuple[CONDITIONING]:
        import torch

        src = _first(conditioning_from, "conditioning_from")[0]
        out = []
        for emb, extras in conditioning_to:
            if src.shape[2] != emb.shape[2]:
                raise ValueError(f"ConditioningConcat: embeddings of width {src.shape[2]} cannot follow width "
                                 f"{emb.shape[2]}; encode both prompts with the same CLIP")
            out.append((torch.cat([emb, src.to(emb.dtype)], dim=1), dict(extras)))
        return (out,)


class ConditioningZeroOut(Node):
    """Zero the embeddings (and SDXL pooled output) of a conditioning: an "empty" negative."""

    DISPLAY_NAME = "ConditioningZeroOut"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING) -> tuple[CONDITIONING]:
        import torch

        out = []
        for emb, extras in conditioning:
            d = dict(extras)
            if d.get("pooled_output") is not None:
                d["pooled_output"] = torch.zeros_like(d["pooled_output"])
            out.append((torch.zeros_like(emb), d))
        return (out,)


class ConditioningSetTimestepRange(Node):
    """Apply a conditioning only between two fractions of the sampling (0 = first step, 1 = the end)."""

    DISPLAY_NAME = "ConditioningSetTimestepRange"
    CATEGORY = "advanced/conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"), "start": Float(0.0, min=0.0, max=1.0, step=0.001),
              "end": Float(1.0, min=0.0, max=1.0, step=0.001)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, start: float,
                end: float) -> tuple[CONDITIONING]:
        return (_with(conditioning, start_percent=float(start), end_percent=float(end)),)


class ConditioningSetArea(Node):
    """Apply a conditioning to a rectangle of the image (pixels, in steps of 8), weighted by ``strength``."""

    DISPLAY_NAME = "Conditioning (Set Area)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"),
              "width": Int(64, min=64, max=MAX_RESOLUTION, step=8),
              "height": Int(64, min=64, max=MAX_RESOLUTION, step=8),
              "x": Int(0, min=0, max=MAX_RESOLUTION, step=8), "y": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "strength": Float(1.0, min=0.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, width: int, height: int, x: int, y: int,
                strength: float) -> tuple[CONDITIONING]:
        area = (int(height) // 8, int(width) // 8, int(y) // 8, int(x) // 8)
        return (_with(conditioning, area=area, strength=float(strength), set_area_to_bounds=False),)


class ConditioningSetAreaPercentage(Node):
    """Apply a conditioning to a rectangle given as fractions of the image size, weighted by ``strength``."""

    DISPLAY_NAME = "Conditioning (Set Area with Percentage)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"),
              "width": Float(1.0, min=0.0, max=1.0, step=0.01), "height": Float(1.0, min=0.0, max=1.0, step=0.01),
              "x": Float(0.0, min=0.0, max=1.0, step=0.01), "y": Float(0.0, min=0.0, max=1.0, step=0.01),
              "strength": Float(1.0, min=0.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, width: float, height: float, x: float,
                y: float, strength: float) -> tuple[CONDITIONING]:
        area = ("percentage", float(height), float(width), float(y), float(x))
        return (_with(conditioning, area=area, strength=float(strength), set_area_to_bounds=False),)


class ConditioningSetAreaStrength(Node):
    """Set the weight of a conditioning when its prediction is blended with others."""

    DISPLAY_NAME = "ConditioningSetAreaStrength"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"), "strength": Float(1.0, min=0.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, strength: float) -> tuple[CONDITIONING]:
        return (_with(conditioning, strength=float(strength)),)


class ConditioningSetMask(Node):
    """Apply a conditioning where a mask is set, weighted by the mask × ``strength``."""

    DISPLAY_NAME = "Conditioning (Set Mask)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning": Link("CONDITIONING"), "mask": Link("MASK"),
              "strength": Float(1.0, min=0.0, max=10.0, step=0.01),
              "set_cond_area": Combo(["default", "mask bounds"])}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx: ExecutionContext, conditioning: CONDITIONING, mask: MASK, strength: float,
                set_cond_area: str) -> tuple[CONDITIONING]:
        m = mask if mask.dim() >= 3 else mask.unsqueeze(0)
        return (_with(conditioning, mask=m.float(), set_area_to_bounds=set_cond_area != "default",
                      mask_strength=float(strength)),)


@hookimpl
def nodegraph_nodes():
    """The conditioning nodes."""
    return [CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine, ConditioningAverage, ConditioningConcat,
            ConditioningZeroOut, ConditioningSetTimestepRange, ConditioningSetArea, ConditioningSetAreaPercentage,
            ConditioningSetAreaStrength, ConditioningSetMask]
