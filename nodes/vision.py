"""Image-prompted conditioning: CLIP vision, unCLIP, style models and GLIGEN."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The image-prompt conditioning nodes."""
    return []
