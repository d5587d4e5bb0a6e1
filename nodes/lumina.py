"""Lumina 2 and Z-Image nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Lumina 2 and Z-Image nodes."""
    return []
