"""ControlNet and T2I-Adapter nodes, and the Canny preprocessor."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The ControlNet nodes."""
    return []
