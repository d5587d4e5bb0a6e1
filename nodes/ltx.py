"""LTX-Video nodes: empty video latents, frame-rate conditioning, the LTXV scheduler and image-to-video."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The LTX-Video nodes."""
    return []
