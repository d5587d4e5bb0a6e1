"""Stable Diffusion 3.5 nodes: triple text encoders, SD3 text encoding and model sampling."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The SD3 nodes."""
    return []
