"""What a node sees while it runs: progress reporting, interruption, configuration and shared services."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import EngineConfig
from .events import EventBus, NodeProgress


class Interrupted(Exception):
    """Raised inside a run when it was interrupted; the executor turns it into a RunInterrupted event."""


class InterruptFlag:
    """A cooperative interrupt switch shared by a run and whoever may stop it (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        """Ask the run to stop at its next check."""
        self._event.set()

    def clear(self) -> None:
        """Reset before the next run."""
        self._event.clear()

    def is_set(self) -> bool:
        """Whether an interrupt was requested."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise ``Interrupted`` if an interrupt was requested."""
        if self._event.is_set():
            raise Interrupted("interrupted by request")


@dataclass
class Services:
    """Long-lived objects shared by nodes across runs (model manager, device policy, …), keyed by type."""

    _items: dict[type, Any] = field(default_factory=dict)

    def get(self, kind: type, factory: Callable[[], Any] | None = None) -> Any:
        """The service of ``kind``, created with ``factory`` (or ``kind()``) on first use."""
        if kind not in self._items:
            self._items[kind] = (factory or kind)()
        return self._items[kind]

    def find(self, kind: type) -> Any | None:
        """The service of ``kind`` if one was created, without creating it."""
        return self._items.get(kind)

    def put(self, kind: type, value: Any) -> None:
        """Install a service explicitly."""
        self._items[kind] = value

    def values(self) -> list[Any]:
        """All services created so far."""
        return list(self._items.values())


@dataclass
class ExecutionContext:
    """Passed to ``Node.execute``: where the node is, what run it belongs to, and helpers for long work."""

    node_id: str
    class_type: str
    run_id: str
    config: EngineConfig
    services: Services
    bus: EventBus
    interrupt: InterruptFlag
    prompt: dict[str, Any] = field(default_factory=dict)
    extra_data: dict[str, Any] = field(default_factory=dict)
    manifest_source: "Callable[[], dict[str, Any] | None] | None" = None

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The run's provenance manifest (built on first use; SaveImage writes it into the PNG)."""
        return self.manifest_source() if self.manifest_source else None

    def progress(self, value: int, total: int, preview: tuple[str, bytes] | None = None) -> None:
        """Report progress (and optionally a preview image as ("JPEG"|"PNG", bytes)); also checks for interrupt."""
        self.bus.emit(NodeProgress(self.run_id, self.node_id, int(value), int(total), preview))
        self.interrupt.check()

    def check_interrupt(self) -> None:
        """Raise ``Interrupted`` if the run was asked to stop; long nodes call this at each step."""
        self.interrupt.check()

    @property
    def extra_pnginfo(self) -> dict[str, Any]:
        """Extra PNG text chunks sent by the client (the editor sends ``workflow``)."""
        return dict(self.extra_data.get("extra_pnginfo") or {})
