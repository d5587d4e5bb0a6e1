"""String, regex and JSON nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The String, regex and JSON nodes nodes."""
    return []
