"""Custom sampling nodes (ComfyUI's SamplerCustom family): samplers, sigmas, noise and guiders as links."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The custom sampling nodes."""
    return []
