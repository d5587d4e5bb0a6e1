"""Number nodes: math expressions, conversions, seeds, resolutions (ComfyUI's nodes_math, nodes_number_convert,
nodes_seed and nodes_resolution: names, inputs and behaviour)."""

from __future__ import annotations

import math
import string
from typing import Any

from nodegraph.api import (Autogrow, Combo, ExpressionError, Float, Int, Link, Node, Output, String, advanced,
                           evaluate_expression, hookimpl, with_options)

INT_MAX = 2**63 - 1  # sys.maxsize on 64-bit platforms, ComfyUI's bound for seeds


class ComfyMathExpression(Node):
    """Evaluate a math expression over the connected values a, b, c, … (and the list ``values``).

    Allowed: numbers, + - * / // % **, comparisons, and/or/not, ``x if c else y``, and the functions sum, min, max,
    abs, round, pow, sqrt, ceil, floor, log, log2, log10, sin, cos, tan, int, float. Never Python's eval.
    """

    DISPLAY_NAME = "Math Expression"
    CATEGORY = "utilities"
    INPUTS = {"expression": with_options(String("a + b", multiline=True), drop=["dynamicPrompts"]),
              "values": Autogrow(Link("FLOAT,INT,BOOLEAN"), names=list(string.ascii_lowercase), min=1,
                                 template_name="value")}
    OUTPUTS = (Output("FLOAT", "FLOAT"), Output("INT", "INT"), Output("BOOLEAN", "BOOL"))

    def execute(self, ctx, expression: str, values: dict[str, Any] | None = None):
        values = dict(values or {})
        names: dict[str, Any] = {**values, "values": list(values.values())}
        try:
            result = evaluate_expression(expression, names)
        except ExpressionError as exc:
            raise ValueError(f"ComfyMathExpression: input 'expression' {expression[:80]!r}: {exc}") from None
        if isinstance(result, list) or not isinstance(result, (int, float)):
            raise ValueError(f"ComfyMathExpression: input 'expression' {expression[:80]!r} must give a number, got "
                             f"{type(result).__name__} {result!r}; wrap a list in sum(), min() or max()")
        try:
            as_float = float(result)
        except OverflowError:
            raise ValueError(f"ComfyMathExpression: input 'expression' {expression[:80]!r} gives a number too large "
                             "for a float; use smaller numbers") from None
        if not math.isfinite(as_float):
            raise ValueError(f"ComfyMathExpression: input 'expression' {expression[:80]!r} gives {as_float}, not a "
                             "finite number; check for overflow")
        return (as_float, int(result), bool(result))


class ComfyNumberConvert(Node):
    """Convert an INT, FLOAT, STRING or BOOLEAN to a FLOAT and an INT (floats truncate toward zero)."""

    DISPLAY_NAME = "Convert Number"
    CATEGORY = "utilities"
    INPUTS = {"value": with_options(Link("INT,FLOAT,STRING,BOOLEAN"), {"display_name": "value"})}
    OUTPUTS = (Output("FLOAT", "FLOAT"), Output("INT", "INT"))

    def execute(self, ctx, value: Any):
        if isinstance(value, bool):
            return (float(value), int(value))
        if isinstance(value, int):
            return (float(value), value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"ComfyNumberConvert: input 'value' is {value}, not a finite number; feed a finite "
                                 "one")
            return (value, int(value))
        if isinstance(value, str):
            return self._parse(value)
        raise TypeError(f"ComfyNumberConvert: input 'value' is a {type(value).__name__}; connect an INT, FLOAT, "
                        "STRING or BOOLEAN output")

    @staticmethod
    def _parse(value: str) -> tuple[float, int]:
        text = value.strip()
        if not text:
            raise ValueError("ComfyNumberConvert: input 'value' is an empty string; give a number such as 42 or 1.5")
        if len(text) > 4300:  # Python's own int-string limit; longer is no number a graph needs
            raise ValueError(f"ComfyNumberConvert: input 'value' is {len(text):,} characters; give a number")
        try:
            as_float = float(text)
        except ValueError:
            raise ValueError(f"ComfyNumberConvert: input 'value' {text[:80]!r} is not a number; give one such as "
                             "42 or 1.5") from None
        if not math.isfinite(as_float):
            raise ValueError(f"ComfyNumberConvert: input 'value' {text[:80]!r} is not a finite number")
        try:
            return (as_float, int(text))
        except ValueError:
            return (as_float, int(as_float))


class SeedNode(Node):
    """A seed for samplers; the editor can change it after each run (fixed by default)."""

    DISPLAY_NAME = "Seed"
    CATEGORY = "utilities"
    # ComfyUI states no default (the editor starts at 0, ours too) and control_after_generate "fixed".
    INPUTS = {"seed": with_options(Int(0, min=0, max=INT_MAX, step=None, control_after_generate=True),
                                   {"control_after_generate": "fixed"}, drop=["default"])}
    OUTPUTS = (Output("INT", "seed"),)

    def execute(self, ctx, seed: int):
        return (seed,)


#: ResolutionSelector's aspect ratios (label → width, height parts), as ComfyUI lists them.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1 (Square)": (1, 1), "2:3 (Portrait Photo)": (2, 3), "3:2 (Photo)": (3, 2),
    "3:4 (Portrait Standard)": (3, 4), "4:3 (Standard)": (4, 3), "9:16 (Portrait Widescreen)": (9, 16),
    "16:9 (Widescreen)": (16, 9), "21:9 (Ultrawide)": (21, 9),
}


def resolution(aspect_ratio: str, megapixels: float, multiple: int) -> tuple[int, int]:
    """Width and height for an aspect ratio and a megapixel target (1 MP = 1024²), each rounded to ``multiple``."""
    w_part, h_part = ASPECT_RATIOS[aspect_ratio]
    scale = math.sqrt(megapixels * 1024 * 1024 / (w_part * h_part))
    return round(w_part * scale / multiple) * multiple, round(h_part * scale / multiple) * multiple


class ResolutionSelector(Node):
    """Calculate width and height from aspect ratio and megapixel target. Useful for setting up Empty Latent Image
    dimensions."""

    DISPLAY_NAME = "Resolution Selector"
    CATEGORY = "utilities"
    INPUTS = {"aspect_ratio": Combo(list(ASPECT_RATIOS), default="1:1 (Square)",
                                    tooltip="The aspect ratio for the output dimensions."),
              "megapixels": Float(1.0, min=0.1, max=16.0, step=0.1,
                                  tooltip="Target total megapixels. 1.0 MP ≈ 1024x1024 for square."),
              "multiple": advanced(Int(8, min=8, max=128, step=4, tooltip="Nearest multiple of the result to set "
                                                                          "the selected resolution to."))}
    OUTPUTS = (Output("INT", "width", tooltip="Calculated width in pixels multiplied by the selected multiple."),
               Output("INT", "height", tooltip="Calculated height in pixels multiplied by the selected multiple."))

    def execute(self, ctx, aspect_ratio: str, megapixels: float, multiple: int):
        return resolution(aspect_ratio, megapixels, multiple)


@hookimpl
def nodegraph_nodes():
    """The number nodes."""
    return [ComfyMathExpression, ComfyNumberConvert, SeedNode, ResolutionSelector]
