"""A node installed on only one of the test workers (catalogue routing)."""

from __future__ import annotations

from nodegraph import Int, Node, NodeOutput, hookimpl


class OnlyOnSome(Node):
    """An output node that exists on some workers only."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"value": Int(0)}
    OUTPUTS = ()

    def execute(self, ctx, value: int):
        return NodeOutput((), {"text": [str(value)]})


@hookimpl
def nodegraph_nodes():
    """The extra node."""
    return [OnlyOnSome]
