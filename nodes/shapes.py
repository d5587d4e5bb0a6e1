"""Procedural shape images: the same renderer the embedded model was trained on, for img2img/inpaint inputs."""

from __future__ import annotations

from nodegraph.api import (COLOR_NAMES, COLORS, SHAPES, Combo, Float, Int, Node, Output, ShapeSpec, hookimpl,
                           position_word)
from nodegraph.api import render_shape as render


class ShapeImage(Node):
    """Draw one coloured shape on a coloured background (an IMAGE), and its MASK (1 inside the shape)."""

    DISPLAY_NAME = "Shape Image"
    CATEGORY = "image/procedural"
    INPUTS = {
        "shape": Combo(list(SHAPES), default="circle"),
        "color": Combo(list(COLOR_NAMES), default="red"),
        "background": Combo(list(COLOR_NAMES), default="blue"),
        "size": Int(64, min=16, max=1024, step=8, tooltip="width and height in pixels"),
        "center_x": Float(0.5, min=0.0, max=1.0, tooltip="centre, as a fraction of the width"),
        "center_y": Float(0.5, min=0.0, max=1.0),
        "radius": Float(0.25, min=0.02, max=0.5, tooltip="half-extent, as a fraction of the size"),
    }
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def validate_inputs(cls, config, **constants):
        if constants.get("color") == constants.get("background"):
            return [("background", "the background has the shape's colour, so the shape would be invisible; "
                                   "pick another colour")]
        return []

    def execute(self, ctx, shape, color, background, size, center_x, center_y, radius):
        import numpy as np
        import torch

        cx, cy, r = center_x * size, center_y * size, radius * size
        spec = ShapeSpec(shape, color, background, "large", position_word(cx, cy, size), cx, cy, r)
        pixels = render(spec, size)
        image = torch.from_numpy(pixels.astype(np.float32) / 255.0)[None]
        white, black = COLORS["white"][0], COLORS["black"][0]
        mask_pixels = render(ShapeSpec(shape, "white", "black", "large", spec.position, cx, cy, r), size)
        coverage = (mask_pixels[..., 0].astype(np.float32) - black) / (white - black)  # 0 outside, 1 inside
        mask = torch.from_numpy(np.clip(coverage, 0.0, 1.0))[None]
        return (image, mask)


@hookimpl
def nodegraph_nodes():
    """Procedural image nodes."""
    return [ShapeImage]
