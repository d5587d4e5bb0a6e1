"""Number nodes: math expressions, conversions, seeds, resolutions."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Number nodes nodes."""
    return []
