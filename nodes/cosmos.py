"""Cosmos Predict2 and AuraFlow nodes."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Cosmos Predict2 and AuraFlow nodes."""
    return []
