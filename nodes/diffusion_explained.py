"""Seeing diffusion: forward noising, noise-schedule plots and denoising trajectories."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The nodes that show diffusion at work."""
    return []
