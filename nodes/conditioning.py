"""Conditioning nodes: encode prompts with CLIP, choose the CLIP layer, combine conditionings."""

from __future__ import annotations

from nodegraph.api import CLIP, CONDITIONING, ExecutionContext, Int, Link, Node, Output, String, derive, hookimpl


class CLIPTextEncode(Node):
    """Encode a text prompt with a CLIP model into conditioning that guides the diffusion model."""

    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    INPUTS = {"text": String("", multiline=True, dynamic_prompts=True, tooltip="the text to encode"),
              "clip": Link("CLIP", tooltip="the CLIP model used to encode the text")}
    OUTPUTS = (Output("CONDITIONING", tooltip="the encoded text, to guide the diffusion model"),)

    def execute(self, ctx: ExecutionContext, text: str, clip: CLIP) -> tuple[CONDITIONING]:
        return (ctx.models.encode_text(clip, text, max_chunks=ctx.config.limits.max_text_chunks),)


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


@hookimpl
def nodegraph_nodes():
    """The conditioning nodes."""
    return [CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine]
