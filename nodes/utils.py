"""Utility nodes that need no model: primitives, arithmetic, string formatting, and a value display node."""

from __future__ import annotations

import math
import random
from typing import Any

from nodegraph.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, String, hookimpl

INT_MAX = 2**63 - 1


class PrimitiveInt(Node):
    """An integer constant."""

    DISPLAY_NAME = "Int"
    CATEGORY = "utils/primitive"
    INPUTS = {"value": Int(0, min=-INT_MAX, max=INT_MAX, step=None, control_after_generate=True)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value: int):
        return (value,)


class PrimitiveFloat(Node):
    """A floating-point constant."""

    DISPLAY_NAME = "Float"
    CATEGORY = "utils/primitive"
    INPUTS = {"value": Float(0.0, min=-float(INT_MAX), max=float(INT_MAX), step=0.1)}
    OUTPUTS = (Output("FLOAT"),)

    def execute(self, ctx, value: float):
        return (value,)


class PrimitiveString(Node):
    """A single-line string constant."""

    DISPLAY_NAME = "String"
    CATEGORY = "utils/primitive"
    INPUTS = {"value": String("")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, value: str):
        return (value,)


class PrimitiveStringMultiline(Node):
    """A multi-line string constant."""

    DISPLAY_NAME = "String (Multiline)"
    CATEGORY = "utils/primitive"
    INPUTS = {"value": String("", multiline=True)}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, value: str):
        return (value,)


class PrimitiveBoolean(Node):
    """A boolean constant."""

    DISPLAY_NAME = "Boolean"
    CATEGORY = "utils/primitive"
    INPUTS = {"value": Boolean(False)}
    OUTPUTS = (Output("BOOLEAN"),)

    def execute(self, ctx, value: bool):
        return (value,)


_OPS = {
    "add": lambda a, b: a + b, "subtract": lambda a, b: a - b, "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b, "floor_divide": lambda a, b: a // b, "modulo": lambda a, b: a % b,
    "power": lambda a, b: a ** b, "min": min, "max": max,
}


class IntMath(Node):
    """Integer arithmetic: a (op) b."""

    DISPLAY_NAME = "Int Math"
    CATEGORY = "utils/math"
    INPUTS = {"a": Int(0, min=-INT_MAX, max=INT_MAX), "b": Int(0, min=-INT_MAX, max=INT_MAX),
              "operation": Combo([k for k in _OPS if k != "divide"], default="add")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, a: int, b: int, operation: str):
        if operation in ("floor_divide", "modulo") and b == 0:
            raise ZeroDivisionError("b is 0; set b to a non-zero integer")
        if operation == "power" and abs(a) > 1 and b > 0 and b * math.log2(abs(a)) > 63:
            # Checked before computing: a ** b of Python ints has no size limit and would run for ever.
            raise OverflowError(f"{a} ** {b} does not fit a 64-bit integer; use a smaller exponent")
        return (int(_OPS[operation](a, b)),)


class FloatMath(Node):
    """Floating-point arithmetic: a (op) b."""

    DISPLAY_NAME = "Float Math"
    CATEGORY = "utils/math"
    INPUTS = {"a": Float(0.0, min=-1e18, max=1e18), "b": Float(0.0, min=-1e18, max=1e18),
              "operation": Combo(list(_OPS), default="add")}
    OUTPUTS = (Output("FLOAT"),)

    def execute(self, ctx, a: float, b: float, operation: str):
        if operation in ("divide", "floor_divide", "modulo") and b == 0:
            raise ZeroDivisionError("b is 0; set b to a non-zero number")
        result = float(_OPS[operation](a, b))
        if not math.isfinite(result):
            raise OverflowError(f"{a} {operation} {b} is not a finite number")
        return (result,)


class IntToFloat(Node):
    """Convert an integer to a float."""

    CATEGORY = "utils/math"
    INPUTS = {"value": Int(0, min=-INT_MAX, max=INT_MAX, force_input=True)}
    OUTPUTS = (Output("FLOAT"),)

    def execute(self, ctx, value: int):
        return (float(value),)


class StringFormat(Node):
    """Format a template with {a}, {b}, {c} placeholders (Python str.format)."""

    DISPLAY_NAME = "String Format"
    CATEGORY = "utils/string"
    INPUTS = {"template": String("{a}", multiline=True),
              "a": Link("*", optional=True), "b": Link("*", optional=True), "c": Link("*", optional=True)}
    OUTPUTS = (Output("STRING"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        template = constants.get("template", "")
        try:
            template.format(a="", b="", c="")
        except (KeyError, IndexError, ValueError) as exc:
            return [("template", f"template {template!r} is not valid: {exc}; use only {{a}}, {{b}}, {{c}}")]
        return []

    def execute(self, ctx, template: str, a: Any = "", b: Any = "", c: Any = ""):
        return (template.format(a=a, b=b, c=c),)


class StringConcatenate(Node):
    """Join two strings with a delimiter."""

    DISPLAY_NAME = "Concatenate"
    CATEGORY = "utils/string"
    INPUTS = {"string_a": String("", multiline=True), "string_b": String("", multiline=True),
              "delimiter": String("")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string_a: str, string_b: str, delimiter: str):
        return (f"{string_a}{delimiter}{string_b}",)


class RandomInt(Node):
    """A random integer in [min, max]; never cached."""

    DISPLAY_NAME = "Random Int"
    CATEGORY = "utils/math"
    DETERMINISTIC = False
    INPUTS = {"min": Int(0, min=-INT_MAX, max=INT_MAX), "max": Int(100, min=-INT_MAX, max=INT_MAX)}
    OUTPUTS = (Output("INT"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        if constants.get("min", 0) > constants.get("max", 0):
            return [("min", "min is greater than max; swap them")]
        return []

    def execute(self, ctx, min: int, max: int):
        return (random.SystemRandom().randint(min, max),)


class ShowValue(Node):
    """Show any value as text in the UI (an output node)."""

    DISPLAY_NAME = "Show Value"
    CATEGORY = "utils"
    OUTPUT_NODE = True
    INPUTS = {"value": Link("*")}
    OUTPUTS = ()

    def execute(self, ctx, value: Any):
        return NodeOutput((), {"text": [str(value)]})


@hookimpl
def nodegraph_nodes():
    """The utility nodes."""
    return [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean, IntMath,
            FloatMath, IntToFloat, StringFormat, StringConcatenate, RandomInt, ShowValue]
