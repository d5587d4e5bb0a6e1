"""Test-only plugin for the resilience tests: nodes that misbehave the ways real plugins do."""

from __future__ import annotations

import os
import time

from nodegraph import Combo, Float, Int, Node, NodeOutput, String, hookimpl


class Stubborn(Node):
    """Sleep ``seconds`` in a loop that never calls ``ctx.check_interrupt()`` (it cannot be stopped politely)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"seconds": Float(60.0, min=0.0, max=3600.0), "tag": String("")}
    OUTPUTS = ()

    def execute(self, ctx, seconds: float, tag: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return NodeOutput((), {"text": [f"stubborn:{tag}"]})


class RaiseBase(Node):
    """Raise a BaseException that is not an Exception (SystemExit, KeyboardInterrupt or GeneratorExit)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"kind": Combo(["SystemExit", "KeyboardInterrupt", "GeneratorExit"]), "tag": String("")}
    OUTPUTS = ()

    def execute(self, ctx, kind: str, tag: str):
        raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
               "GeneratorExit": GeneratorExit}[kind](f"{kind} from a node ({tag})")


class ExitProcess(Node):
    """End the process at once (``os._exit``), as a crashing native extension would."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"code": Int(3, min=0, max=255)}
    OUTPUTS = ()

    def execute(self, ctx, code: int):
        os._exit(code)


class NaNOutput(Node):
    """An output node whose UI payload holds NaN and infinities (not JSON numbers)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"tag": String("")}
    OUTPUTS = ()

    def execute(self, ctx, tag: str):
        return NodeOutput((), {"values": [float("nan"), float("inf"), -float("inf"), 1.5], "text": [tag]})


@hookimpl
def nodegraph_nodes():
    """The resilience test nodes."""
    return [Stubborn, RaiseBase, ExitProcess, NaNOutput]
