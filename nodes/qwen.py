"""Qwen-Image nodes: text encoding for editing, AuraFlow-style model sampling."""

from __future__ import annotations

from nodegraph.api import hookimpl


@hookimpl
def nodegraph_nodes():
    """The Qwen-Image nodes."""
    return []
