"""Video: the VIDEO type, loading, creating, splitting and saving video and animated images (PyAV)."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The video nodes."""
    return []
