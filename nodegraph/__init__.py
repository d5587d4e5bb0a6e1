"""nodegraph: a plugin-based node-graph workflow engine for diffusion image generation.

Node authors: import from ``nodegraph.api`` (the whole public surface); the names below are kept for convenience.
They load on first use, so ``import nodegraph`` (and the pytest plugin ``nodegraph.testing``) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import EngineConfig
    from .context import ExecutionContext, Interrupted, InterruptFlag
    from .hookspecs import hookimpl
    from .inputs import Boolean, Combo, Float, Int, Link, Output, String
    from .node import Node, NodeOutput
    from .pyapi import AsyncClient, Client, Graph, Workflow

_EXPORTS = {"EngineConfig": "config", "ExecutionContext": "context", "Interrupted": "context",
            "InterruptFlag": "context", "hookimpl": "hookspecs", "Boolean": "inputs", "Combo": "inputs",
            "Float": "inputs", "Int": "inputs", "Link": "inputs", "Output": "inputs", "String": "inputs",
            "Node": "node", "NodeOutput": "node", "Graph": "pyapi", "Workflow": "pyapi", "Client": "pyapi",
            "AsyncClient": "pyapi"}

__all__ = ["Boolean", "Combo", "EngineConfig", "ExecutionContext", "Float", "Int", "Interrupted", "InterruptFlag",
           "Link", "Node", "NodeOutput", "Output", "String", "hookimpl", "Graph", "Workflow", "Client", "AsyncClient"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import an exported name from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nodegraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
