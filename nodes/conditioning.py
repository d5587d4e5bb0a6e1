"""Conditioning nodes: encode prompts with CLIP, choose the CLIP layer, combine conditionings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nodegraph import Int, Link, Node, Output, String, hookimpl


def device_manager(ctx: Any) -> Any:
    """The engine's DeviceManager service."""
    from nodegraph.diffusion.devices import DeviceManager

    return ctx.services.get(DeviceManager, lambda: DeviceManager.from_config(ctx.config))


def lora_library(ctx: Any) -> Any:
    """The engine's LoraLibrary service (parsed LoRA files)."""
    from nodegraph.diffusion.lora import LoraLibrary

    return ctx.services.get(LoraLibrary)


class CLIPTextEncode(Node):
    """Encode a text prompt with a CLIP model into conditioning that guides the diffusion model."""

    DISPLAY_NAME = "CLIP Text Encode (Prompt)"
    CATEGORY = "conditioning"
    INPUTS = {"text": String("", multiline=True, dynamic_prompts=True, tooltip="the text to encode"),
              "clip": Link("CLIP", tooltip="the CLIP model used to encode the text")}
    OUTPUTS = (Output("CONDITIONING", tooltip="the encoded text, to guide the diffusion model"),)

    def execute(self, ctx, text: str, clip: Any):
        from nodegraph.diffusion.sampling import lora_applied
        from nodegraph.diffusion.text import encode_text

        devices = device_manager(ctx)
        with devices.use(*clip.encoders), lora_applied(clip, lora_library(ctx) if clip.loras else None):
            return (encode_text(clip, text, devices.device),)


class CLIPSetLastLayer(Node):
    """Stop CLIP at an earlier layer (-1 = last, -2 = penultimate, the "clip skip" of other tools)."""

    DISPLAY_NAME = "CLIP Set Last Layer"
    CATEGORY = "conditioning"
    INPUTS = {"clip": Link("CLIP"), "stop_at_clip_layer": Int(-1, min=-24, max=-1, step=1)}
    OUTPUTS = (Output("CLIP"),)

    def execute(self, ctx, clip: Any, stop_at_clip_layer: int):
        return (replace(clip, stop_at_layer=stop_at_clip_layer),)


class ConditioningCombine(Node):
    """Combine two conditionings: sampling averages the noise predictions of all their entries."""

    DISPLAY_NAME = "Conditioning (Combine)"
    CATEGORY = "conditioning"
    INPUTS = {"conditioning_1": Link("CONDITIONING"), "conditioning_2": Link("CONDITIONING")}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning_1: list, conditioning_2: list):
        return (list(conditioning_1) + list(conditioning_2),)


@hookimpl
def nodegraph_nodes():
    """The conditioning nodes."""
    return [CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine]
