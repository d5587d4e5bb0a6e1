"""Test nodes for graph semantics through the server and the CLI: a node that expands into a chain."""

from __future__ import annotations

from nodegraph.api import Int, Link, Node, NodeOutput, Output, hookimpl


class SemStart(Node):
    """An integer."""

    CATEGORY = "test/semantics"
    INPUTS = {"value": Int(0)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value: int):
        return (value,)


class SemInc(Node):
    """x + 1."""

    CATEGORY = "test/semantics"
    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x: int):
        return (x + 1,)


class SemRepeat(Node):
    """x + n, by expanding into a chain of n SemInc nodes."""

    CATEGORY = "test/semantics"
    INPUTS = {"x": Link("INT"), "n": Int(1, min=1, max=100)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x: int, n: int):
        graph = {"0": {"class_type": "SemInc", "inputs": {"x": x}}}
        for i in range(1, n):
            graph[str(i)] = {"class_type": "SemInc", "inputs": {"x": [str(i - 1), 0]}}
        return NodeOutput(([str(n - 1), 0],), expand=graph)


@hookimpl
def nodegraph_nodes():
    """The semantics test nodes."""
    return [SemStart, SemInc, SemRepeat]
