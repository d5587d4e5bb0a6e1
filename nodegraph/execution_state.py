"""State shared by one run's node executions (the executor's internals, kept apart to keep modules small)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import InterruptFlag
from .events import EventBus
from .validation import PlannedNode, ValidatedPrompt

if TYPE_CHECKING:
    from .executor import RunResult


class Expand(Exception):
    """Raised by ``_call`` when a node returned a subgraph to splice in (not an error)."""

    def __init__(self, values: Any, ui: dict[str, Any] | None, graph: Any) -> None:
        super().__init__("expansion")
        self.values, self.ui, self.graph = values, ui, graph


@dataclass
class RunState:
    """What one run's node executions share."""

    prompt: ValidatedPrompt
    keys: dict[str, str]
    volatile: set[str]
    outputs: set[str]
    bus: EventBus
    interrupt: InterruptFlag
    result: RunResult
    extra_data: dict[str, Any]
    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    nodes: dict[str, PlannedNode] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    current: PlannedNode | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def upstream(prompt: ValidatedPrompt, roots: list[str], stop: set[str]) -> set[str]:
    """``roots`` and their ancestors, not crossing ``stop``: what lazy inputs may still run."""
    found: set[str] = set()
    stack = [r for r in roots if r not in stop]
    while stack:
        nid = stack.pop()
        if nid in found:
            continue
        found.add(nid)
        stack.extend(src for src, _ in prompt.nodes[nid].links.values() if src not in stop)
    return found
