"""Wan video model nodes: empty video latents, image-to-video conditioning, latent trimming."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Wan video nodes."""
    return []
