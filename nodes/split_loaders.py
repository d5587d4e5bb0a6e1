"""Loaders for split model files: diffusion models, text encoders (ComfyUI's UNETLoader/CLIPLoader family)."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The split-file loaders."""
    return []
