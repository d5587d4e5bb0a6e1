"""Test-only plugin for the editor tests: a node that reports progress, and a web folder with an editor extension."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nodegraph import Int, Link, Node, Output, hookimpl


class SlowInvert(Node):
    """Invert images in ``steps`` steps of ``step_ms`` milliseconds, reporting progress after each.

    ``seed`` does nothing; it gives the editor a seed widget with its extra control_after_generate value.
    """

    CATEGORY = "testing"
    INPUTS = {"image": Link("IMAGE"), "seed": Int(0, min=0, max=2**32, control_after_generate=True),
              "steps": Int(8, min=1, max=1000), "step_ms": Int(150, min=0, max=5000)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, seed: int, steps: int, step_ms: int):
        for i in range(steps):
            time.sleep(step_ms / 1000)
            ctx.check_interrupt()
            ctx.progress(i + 1, steps)
        return (1.0 - image,)


@hookimpl
def nodegraph_nodes():
    """The test node."""
    return [SlowInvert]


@hookimpl
def nodegraph_web_directory():
    """An editor extension that marks the page, so the test sees plugin extensions are served and run."""
    return str(Path(__file__).resolve().parent / "web")
