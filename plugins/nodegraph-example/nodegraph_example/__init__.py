"""Example nodegraph plugin: shows the node contract, the hook, versioning with a migration, and progress."""

from __future__ import annotations

from typing import Any

from nodegraph import Combo, Int, Node, Output, String, hookimpl


class ExampleGreeting(Node):
    """Build a greeting. Version 2 renamed the input ``name`` to ``who``; 1.x workflows are migrated."""

    DISPLAY_NAME = "Greeting (example)"
    CATEGORY = "example"
    VERSION = "2.0.0"
    INPUTS = {"who": String("world", tooltip="whom to greet"),
              "punctuation": Combo(["!", ".", "?"], default="!")}
    OUTPUTS = (Output("STRING", "greeting"),)

    @classmethod
    def migrate(cls, from_version: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """1.x called the input ``name`` and had no punctuation choice."""
        if from_version.startswith("1."):
            migrated = {k: v for k, v in inputs.items() if k != "name"}
            migrated["who"] = inputs.get("name", "world")
            migrated.setdefault("punctuation", "!")
            return migrated
        return None

    def execute(self, ctx, who: str, punctuation: str):
        return (f"Hello, {who}{punctuation}",)


class ExampleCheckerboard(Node):
    """A checkerboard IMAGE; reports progress per row of squares."""

    DISPLAY_NAME = "Checkerboard (example)"
    CATEGORY = "example"
    VERSION = "1.0.0"
    INPUTS = {"size": Int(64, min=8, max=4096, step=8), "squares": Int(8, min=1, max=64)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, size: int, squares: int):
        import torch

        cell = max(1, size // squares)
        rows = []
        for r in range(squares):
            ctx.progress(r + 1, squares)
            row = torch.tensor([(r + c) % 2 for c in range(squares)], dtype=torch.float32)
            rows.append(row.repeat_interleave(cell))
        board = torch.stack(rows).repeat_interleave(cell, dim=0)[:size, :size]
        return (board[None, :, :, None].expand(1, board.shape[0], board.shape[1], 3).contiguous(),)


@hookimpl
def nodegraph_nodes():
    """The example nodes."""
    return [ExampleGreeting, ExampleCheckerboard]


@hookimpl
def nodegraph_types():
    """The example adds no value type of its own but documents one it uses."""
    return {"GREETING": "a greeting string (example plugin)"}


@hookimpl
def nodegraph_model_folders():
    """A folder for example presets."""
    return {"example_presets": [".json"]}


@hookimpl
def nodegraph_routes(config):
    """GET /example/hello answers with a greeting (plugins can add HTTP routes)."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"greeting": ExampleGreeting().execute(None, "plugin routes", "!")[0]})

    return [web.get("/example/hello", hello)]


@hookimpl
def nodegraph_web_directory():
    """The example ships one editor extension."""
    import os

    return os.path.join(os.path.dirname(__file__), "web")
