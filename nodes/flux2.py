"""Flux.2 (dev, Klein) nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Flux.2 (dev, Klein) nodes."""
    return []
