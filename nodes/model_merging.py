"""Model nodes: checkpoint merges, CLIP merges and saving checkpoints."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The model merging and saving nodes."""
    return []
