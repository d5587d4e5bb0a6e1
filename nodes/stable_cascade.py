"""Stable Cascade nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Stable Cascade nodes."""
    return []
