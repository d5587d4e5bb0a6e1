"""Logic nodes: a switch that runs only the branch it passes on (lazy inputs), and a user-written combo."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Boolean, FreeComboInput, Link, Node, Output, hookimpl

#: Stands for an input that is not connected at all (``None`` means connected but not evaluated yet).
MISSING: Any = object()


class ComfySwitchNode(Node):
    """Pass on ``on_true`` or ``on_false`` as ``switch`` says; only the chosen branch runs."""

    DISPLAY_NAME = "Switch"
    CATEGORY = "logic"
    INPUTS = {"switch": Boolean(False),
              "on_false": Link("*", lazy=True, optional=True, tooltip="passed on when switch is false"),
              "on_true": Link("*", lazy=True, optional=True, tooltip="passed on when switch is true")}
    OUTPUTS = (Output("*", name="output"),)

    def check_lazy_status(self, ctx, switch: bool = False, on_false: Any = MISSING,
                          on_true: Any = MISSING) -> list[str]:
        """The branch the switch picks, unless it is already evaluated (the other one when only one is wired)."""
        if on_false is MISSING:
            return ["on_true"] if on_true is None else []
        if on_true is MISSING:
            return ["on_false"] if on_false is None else []
        if switch:
            return ["on_true"] if on_true is None else []
        return ["on_false"] if on_false is None else []

    def execute(self, ctx, switch: bool, on_false: Any = MISSING, on_true: Any = MISSING):
        if on_true is MISSING and on_false is MISSING:
            raise ValueError("Switch has neither on_true nor on_false connected; connect the branch(es) to choose "
                             "between")
        if on_true is MISSING:
            return (on_false,)
        if on_false is MISSING:
            return (on_true,)
        return (on_true if switch else on_false,)


class CustomCombo(Node):
    """Pass on the option chosen on a combo whose options the user writes in the editor."""

    DISPLAY_NAME = "Custom Combo"
    CATEGORY = "utils"
    INPUTS = {"choice": FreeComboInput(choices=())}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, choice: str):
        return (choice,)


@hookimpl
def nodegraph_nodes():
    """The logic nodes."""
    return [ComfySwitchNode, CustomCombo]
