"""A drop-in plugin: any module or package in plugins/ (or a folder given by --plugin-dir) is loaded."""

from nodegraph import Node, Output, String, hookimpl


class ReverseText(Node):
    """Reverse a string."""

    DISPLAY_NAME = "Reverse Text"
    CATEGORY = "utils/string"
    INPUTS = {"text": String("")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, text: str):
        return (text[::-1],)


@hookimpl
def nodegraph_nodes():
    """The drop-in example's nodes."""
    return [ReverseText]
