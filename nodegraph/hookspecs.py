"""The plugin hooks of nodegraph. Built-in node packs implement them exactly as third-party plugins do."""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "nodegraph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---- node catalogue -------------------------------------------------------------------------------------------------

@hookspec
def nodegraph_nodes() -> list[type]:
    """Return the node classes (``nodegraph.Node`` subclasses) this plugin provides."""


@hookspec
def nodegraph_types() -> dict[str, str]:
    """Return link types this plugin adds, as {TYPE_NAME: one-line description}."""


# ---- files and models -----------------------------------------------------------------------------------------------

@hookspec
def nodegraph_model_folders() -> dict[str, list[str]]:
    """Return model folder kinds this plugin adds, as {folder_name: [file extensions]}."""


# ---- server ---------------------------------------------------------------------------------------------------------

@hookspec
def nodegraph_routes(config: Any) -> list[Any]:
    """Return aiohttp ``RouteDef`` objects to add to the server (mounted at / and /api)."""


@hookspec
def nodegraph_web_directory() -> str | None:
    """Return a folder of JavaScript extensions for the editor, or None."""
