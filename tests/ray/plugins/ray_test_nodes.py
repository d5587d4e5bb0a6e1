"""Test-only nodes for the Ray backend tests: a model-like loader, a stepping node, and one that ignores interrupts."""

from __future__ import annotations

import io
import time

from nodegraph import Boolean, Int, Link, Node, NodeOutput, Output, String, hookimpl


def tiny_png() -> bytes:
    """A 4x4 green PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 255, 0)).save(buf, format="PNG")
    return buf.getvalue()


class FakeCheckpoint(Node):
    """Stands for a checkpoint loader: slow the first time, then cached by the worker that ran it."""

    CATEGORY = "testing"
    INPUTS = {"name": String("a"), "load_ms": Int(200, min=0, max=10000)}
    OUTPUTS = (Output("MODEL_NAME"),)

    def execute(self, ctx, name: str, load_ms: int):
        time.sleep(load_ms / 1000)
        return (f"model-{name}",)


class Generate(Node):
    """Uses a loaded 'model'; reports ``steps`` progress steps (with previews), checking for interrupt each slice.

    With ``save`` it writes ``output/{tag}.txt`` and names it in its UI payload.
    """

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"model": Link("MODEL_NAME"), "seed": Int(0, min=0, max=2**31), "steps": Int(3, min=1, max=100000),
              "step_ms": Int(10, min=0, max=10000), "preview": Boolean(False), "tag": String(""),
              "save": Boolean(False)}
    OUTPUTS = ()

    def execute(self, ctx, model: str, seed: int, steps: int, step_ms: int, preview: bool, tag: str,
                save: bool = False):
        png = tiny_png() if preview else None
        for i in range(steps):
            deadline = time.monotonic() + step_ms / 1000
            while time.monotonic() < deadline:
                time.sleep(min(0.005, max(deadline - time.monotonic(), 0)))
                ctx.check_interrupt()
            ctx.progress(i + 1, steps, ("PNG", png) if png else None)
        ui: dict = {"text": [f"{model}|{seed}"]}
        if save:
            folder = ctx.config.folder_for("output")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{tag}.txt").write_text(f"{tag}:{seed}")
            ui["files"] = [{"filename": f"{tag}.txt", "subfolder": "", "type": "output"}]
        return NodeOutput((), ui)


class Stubborn(Node):
    """Sleeps without ever checking for interrupt (a node Ray must cancel)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"ms": Int(3000, min=0, max=600000)}
    OUTPUTS = ()

    def execute(self, ctx, ms: int):
        time.sleep(ms / 1000)
        return NodeOutput((), {"text": ["done"]})


@hookimpl
def nodegraph_nodes():
    """The test nodes."""
    return [FakeCheckpoint, Generate, Stubborn]
