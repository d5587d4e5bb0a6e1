"""The Python API for headless users: build graphs (``Graph``), load and sweep saved ones (``Workflow``), run them
in-process or on a server (``Client``, ``AsyncClient``)."""

from __future__ import annotations

from .catalogue import Catalogue, GraphBuildError
from .graph import Graph, NodeHandle, Output, Outputs, Upload
from .result import Result

__all__ = ["AsyncClient", "Catalogue", "Client", "Graph", "GraphBuildError", "NodeHandle", "Output", "Outputs",
           "Result", "SweepResult", "Upload", "Workflow"]


def __getattr__(name: str) -> object:
    """Load the workflow, sweep and client modules on first use (the client imports aiohttp)."""
    if name == "Workflow":
        from .workflow import Workflow
        return Workflow
    if name == "SweepResult":
        from .sweep import SweepResult
        return SweepResult
    if name in ("Client", "AsyncClient"):
        from . import client
        return getattr(client, name)
    raise AttributeError(f"module 'nodegraph.pyapi' has no attribute {name!r}")
