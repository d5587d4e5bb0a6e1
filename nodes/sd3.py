"""Stable Diffusion 3.5 nodes: triple text encoders, SD3 text encoding and model sampling; the generic skip-layer
guidance nodes for DiT models (SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple)."""

from __future__ import annotations

from nodegraph.api import (
    Float,
    Link,
    Node,
    Output,
    SkipLayerGuidanceDiTPatch,
    SkipLayerGuidanceDiTSimplePatch,
    String,
    check_block_skip,
    hookimpl,
    parse_block_numbers,
    with_patch,
)


class SkipLayerGuidanceDiT(Node):
    """Guide away from the positive prediction made with some transformer blocks skipped (any DiT model)."""

    DISPLAY_NAME = "SkipLayerGuidanceDiT"
    CATEGORY = "advanced/guidance"
    DESCRIPTION = "Generic version of SkipLayerGuidance node that can be used on every DiT model."
    EXPERIMENTAL = True
    INPUTS = {"model": Link("MODEL"),
              "double_layers": String("7, 8, 9"),
              "single_layers": String("7, 8, 9"),
              "scale": Float(3.0, min=0.0, max=10.0, step=0.1),
              "start_percent": Float(0.01, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(0.15, min=0.0, max=1.0, step=0.001),
              "rescaling_scale": Float(0.0, min=0.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, double_layers: str, single_layers: str, scale: float, start_percent: float,
                end_percent: float, rescaling_scale: float):
        double, single = parse_block_numbers(double_layers), parse_block_numbers(single_layers)
        if not double and not single:
            return (model,)
        check_block_skip(ctx.models.get(model), "SkipLayerGuidanceDiT")
        return (with_patch(model, SkipLayerGuidanceDiTPatch(double, single, float(scale), float(start_percent),
                                                            float(end_percent), float(rescaling_scale))),)


class SkipLayerGuidanceDiTSimple(Node):
    """Run the negative prediction with some transformer blocks skipped (any DiT model)."""

    DISPLAY_NAME = "SkipLayerGuidanceDiTSimple"
    CATEGORY = "advanced/guidance"
    DESCRIPTION = "Simple version of the SkipLayerGuidanceDiT node that only modifies the uncond pass."
    EXPERIMENTAL = True
    INPUTS = {"model": Link("MODEL"),
              "double_layers": String("7, 8, 9"),
              "single_layers": String("7, 8, 9"),
              "start_percent": Float(0.0, min=0.0, max=1.0, step=0.001),
              "end_percent": Float(1.0, min=0.0, max=1.0, step=0.001)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, double_layers: str, single_layers: str, start_percent: float, end_percent: float):
        double, single = parse_block_numbers(double_layers), parse_block_numbers(single_layers)
        if not double and not single:
            return (model,)
        check_block_skip(ctx.models.get(model), "SkipLayerGuidanceDiTSimple")
        return (with_patch(model, SkipLayerGuidanceDiTSimplePatch(double, single, float(start_percent),
                                                                  float(end_percent))),)


@hookimpl
def nodegraph_nodes():
    """The SD3 nodes."""
    return [SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple]
