"""nodegraph: a plugin-based node-graph workflow engine for diffusion image generation."""

from .config import EngineConfig
from .context import ExecutionContext, Interrupted, InterruptFlag
from .hookspecs import hookimpl
from .inputs import Boolean, Combo, Float, Int, Link, Output, String
from .node import Node, NodeOutput

__all__ = ["Boolean", "Combo", "EngineConfig", "ExecutionContext", "Float", "Int", "Interrupted", "InterruptFlag",
           "Link", "Node", "NodeOutput", "Output", "String", "hookimpl"]
__version__ = "0.1.0"
