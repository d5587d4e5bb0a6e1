"""Training in the graph: image datasets, LoRA training, saving and applying trained LoRAs, loss plots."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The training nodes."""
    return []
