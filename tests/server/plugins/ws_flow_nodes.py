"""Test-only plugin for the WebSocket flow tests: a pass-through node that reports progress with previews."""

from __future__ import annotations

import functools
import os
import time

from nodegraph import Int, Node, Output, hookimpl

INT_MAX = 2**63 - 1


@functools.lru_cache(maxsize=8)
def preview_bytes(kib: int) -> bytes:
    """``kib`` KiB of random (incompressible) bytes, made once per size."""
    return os.urandom(kib * 1024)


class WsFlowStep(Node):
    """``value + 1``, reporting ``steps`` progress steps (``step_ms`` apart), each with a ``preview_kib`` preview."""

    CATEGORY = "testing"
    INPUTS = {"value": Int(0, min=-INT_MAX, max=INT_MAX), "steps": Int(1, min=1, max=1000),
              "step_ms": Int(0, min=0, max=10000), "preview_kib": Int(0, min=0, max=4096)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value: int, steps: int, step_ms: int, preview_kib: int):
        preview = ("JPEG", preview_bytes(preview_kib)) if preview_kib else None
        for i in range(steps):
            if step_ms:
                time.sleep(step_ms / 1000)
            ctx.progress(i + 1, steps, preview)
        return (value + 1,)


@hookimpl
def nodegraph_nodes():
    """The WebSocket flow test nodes."""
    return [WsFlowStep]
