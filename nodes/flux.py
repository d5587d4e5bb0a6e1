"""Flow-matching image families (Flux.1 first): latents, guidance and model-sampling nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The flow-matching family nodes."""
    return []
