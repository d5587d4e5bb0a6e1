"""Qwen-Image nodes: ModelSamplingAuraFlow (the noise shift Qwen-Image's and AuraFlow's graphs set).

Qwen-Image itself loads through the split loaders: UNETLoader (the transformer), CLIPLoader type ``qwen_image``
(Qwen2.5-VL), VAELoader (its Wan-style VAE); prompts go through CLIPTextEncode, latents start from
EmptySD3LatentImage.
"""

from __future__ import annotations

import dataclasses

from nodegraph.api import Float, Link, Node, Output, derive, hookimpl


class ModelSamplingAuraFlow(Node):
    """Set a flow model's noise shift with model time = sigma (AuraFlow, Qwen-Image: ComfyUI's multiplier 1)."""

    DISPLAY_NAME = "ModelSamplingAuraFlow"
    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"),
              "shift": Float(1.73, min=0.0, max=100.0, step=0.01,
                             tooltip="higher spends more of the steps at high noise (Qwen-Image's graphs use 3.1)")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, shift: float):
        flow = ctx.models.get(model).flow
        if flow is None:
            raise ValueError(f"ModelSamplingAuraFlow applies to flow-matching models (Qwen-Image, Flux, SD3); "
                             f"{model.arch} is not one. Remove the node, or load such a model with UNETLoader")
        return (derive(model, flow=dataclasses.replace(flow, kind="discrete", shift=float(shift),
                                                       multiplier=1.0)),)


@hookimpl
def nodegraph_nodes():
    """The Qwen-Image nodes."""
    return [ModelSamplingAuraFlow]
