"""Execution events: plain data objects fanned out to subscribers (CLI progress, WebSocket, Ray stream)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of all execution events."""

    run_id: str


@dataclass(frozen=True)
class RunStarted(Event):
    """A run began; ``nodes`` are the ones it will execute or take from the cache."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodesCached(Event):
    """These nodes' results came from the cache (one event per run, like ComfyUI's execution_cached)."""

    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeStarted(Event):
    """A node began executing."""

    node_id: str = ""
    class_type: str = ""


@dataclass(frozen=True)
class NodeProgress(Event):
    """A long node reported progress; ``preview`` is an optional (format, bytes) image, ``text`` an optional short
    status line (e.g. ``loss 0.0123``)."""

    node_id: str = ""
    value: int = 0
    max: int = 0
    preview: tuple[str, bytes] | None = None
    text: str | None = None


@dataclass(frozen=True)
class NodeImage(Event):
    """A node sent an image whole to the submitting client (SaveImageWebsocket): never dropped nor coalesced."""

    node_id: str = ""
    format: str = "PNG"
    data: bytes = b""


@dataclass(frozen=True)
class NodeFinished(Event):
    """A node finished; ``ui`` is its UI payload (e.g. saved images) or None."""

    node_id: str = ""
    class_type: str = ""
    ui: dict[str, Any] | None = None
    cached: bool = False


@dataclass(frozen=True)
class RunFinished(Event):
    """The run completed; ``outputs`` maps output node ids to their UI payloads."""

    outputs: dict[str, Any] = field(default_factory=dict)
    executed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunFailed(Event):
    """A node raised; the run stopped."""

    node_id: str = ""
    class_type: str = ""
    exception_type: str = ""
    exception_message: str = ""
    traceback: str = ""
    inputs: dict[str, str] = field(default_factory=dict)
    executed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunInterrupted(Event):
    """The run was interrupted cooperatively."""

    node_id: str | None = None
    class_type: str | None = None
    executed: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRetried(Event):
    """The worker running this prompt was lost (e.g. a Ray actor died); the prompt starts again on another one."""

    worker: str = ""
    reason: str = ""
    attempt: int = 1
    node_id: str | None = None


Subscriber = Callable[[Event], None]


class EventBus:
    """Fans events out to subscribers; a failing subscriber is logged and never breaks the run."""

    def __init__(self, subscribers: list[Subscriber] | None = None) -> None:
        self._subscribers: list[Subscriber] = list(subscribers or [])

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber."""
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:  # a broken listener must not break execution
                log.exception("event subscriber %r failed on %s", fn, type(event).__name__)
