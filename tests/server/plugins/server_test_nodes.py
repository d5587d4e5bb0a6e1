"""Test-only plugin for the server tests: a slow node that reports progress and previews, and a route."""

from __future__ import annotations

import io
import time

from aiohttp import web

from nodegraph import Boolean, Int, Node, NodeOutput, String, hookimpl

routes = web.RouteTableDef()


def tiny_png() -> bytes:
    """A 4x4 red PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


class SlowSteps(Node):
    """Count to ``steps``, sleeping ``step_ms`` per step in small slices, reporting progress (and previews).

    With ``save`` it writes ``output/{tag}.txt``.
    """

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"steps": Int(5, min=1, max=100000), "step_ms": Int(20, min=0, max=10000),
              "preview": Boolean(False), "tag": String(""), "save": Boolean(False)}
    OUTPUTS = ()

    def execute(self, ctx, steps: int, step_ms: int, preview: bool, tag: str, save: bool = False):
        png = tiny_png() if preview else None
        for i in range(steps):
            deadline = time.monotonic() + step_ms / 1000
            while time.monotonic() < deadline:
                time.sleep(min(0.01, max(deadline - time.monotonic(), 0)))
                ctx.check_interrupt()
            ctx.progress(i + 1, steps, ("PNG", png) if png else None)
        ui: dict = {"text": [f"{tag}:{steps}"]}
        if save:  # an output file, as SaveImage would write
            folder = ctx.config.folder_for("output")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{tag}.txt").write_text(f"{tag}:{steps}")
            ui["files"] = [{"filename": f"{tag}.txt", "subfolder": "", "type": "output"}]
        return NodeOutput((), ui)


@routes.get("/server_test/ping")
async def ping(request: web.Request) -> web.Response:
    """A plugin route."""
    return web.json_response({"pong": True})


@hookimpl
def nodegraph_nodes():
    """The test nodes."""
    return [SlowSteps]


@hookimpl
def nodegraph_routes(config):
    """The test route."""
    return list(routes)
