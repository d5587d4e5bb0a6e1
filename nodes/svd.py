"""Stable Video Diffusion nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Stable Video Diffusion nodes."""
    return []
