"""Engine events → ComfyUI WebSocket messages, one small message per event (nothing grows with the run).

Each message says how a client's send queue may coalesce it (see ``broadcast``): ``executing`` a node, ``progress``
of a node and previews are superseded by later ones; ``status`` without a ``sid`` by the next status; everything
that ends or records a run (``executed``, ``execution_*``, ``executing`` with node null) is never dropped.
"""

from __future__ import annotations

import struct
import time
from typing import Any

from ..events import (Event, NodeFinished, NodeImage, NodeProgress, NodesCached, NodeStarted, RunFailed,
                      RunInterrupted, RunRetried, RunStarted)
from .broadcast import Outgoing

#: Binary frame event types.
PREVIEW_IMAGE = 1
#: Binary preview image formats.
IMAGE_FORMATS = {"JPEG": 1, "JPG": 1, "PNG": 2}
#: Coalescing keys: one pending message of each per client (``executing`` also per prompt, see ``executing``).
STATUS_KEY = ("status",)
PREVIEW_KEY = ("preview",)


def now_ms() -> int:
    """A ComfyUI timestamp (milliseconds since the epoch)."""
    return int(time.time() * 1000)


def status_message(queue_remaining: int, sid: str | None = None) -> Outgoing:
    """``status {status: {exec_info: {queue_remaining}}, sid?}``."""
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:  # the first message of a socket: it names the client, so it is never superseded
        data["sid"] = sid
        return Outgoing.json("status", data)
    return Outgoing.json("status", data, key=STATUS_KEY)


def preview_frame(fmt: str, image: bytes) -> Outgoing:
    """A binary preview: uint32 BE event type 1, uint32 BE format (1 JPEG, 2 PNG), then the image bytes.

    Sent only to clients that want previews (see ``Connection.previews``); droppable and coalesced.
    """
    return Outgoing(struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS.get(fmt.upper(), 2)) + image, droppable=True,
                    key=PREVIEW_KEY, preview=True)


def image_frame(fmt: str, image: bytes) -> Outgoing:
    """An image a node sent whole (SaveImageWebsocket): the preview frame layout, but never dropped nor coalesced
    and sent whatever the client's preview choice."""
    return Outgoing(struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS.get(fmt.upper(), 2)) + image)


def executing(node: str | None, prompt_id: str) -> Outgoing:
    """``executing {node, display_node, prompt_id}``; node None means the prompt is done (and is never dropped).

    A node's ``executing`` supersedes the pending one of its prompt and the pending preview (it showed the node
    before).
    """
    data = {"node": node, "display_node": node, "prompt_id": prompt_id}
    if node is None:
        return Outgoing.json("executing", data)
    return Outgoing.json("executing", data, key=("executing", prompt_id), replaces=(PREVIEW_KEY,))


def progress(value: int, total: int, node: str, prompt_id: str, text: str | None = None) -> Outgoing:
    """``progress {value, max, prompt_id, node}``: supersedes the pending progress of the same node; droppable.
    A node's status ``text`` (e.g. ``loss 0.0123``) rides in an extra ``text`` field only when there is one: ComfyUI's
    frontend dispatches the data as it is and reads only the fields it knows."""
    data: dict[str, Any] = {"value": value, "max": total, "prompt_id": prompt_id, "node": node}
    if text is not None:
        data["text"] = text
    return Outgoing.json("progress", data, droppable=True, key=("progress", prompt_id, node))


class RunMessages:
    """Translates one prompt's events; keeps the status messages ComfyUI stores in history."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        #: ``[[event, data], ...]`` as in a history entry's ``status.messages``.
        self.history: list[list[Any]] = []
        self._cached_sent = False

    def _status(self, kind: str, data: dict[str, Any]) -> Outgoing:
        data = {"prompt_id": self.prompt_id, **data, "timestamp": now_ms()}
        self.history.append([kind, data])
        return Outgoing.json(kind, data)

    def start(self) -> list[Outgoing]:
        """``execution_start`` (sent before validation in the worker, so even a failed prompt has a start)."""
        return [self._status("execution_start", {})]

    def _ensure_cached(self, nodes: tuple[str, ...] = ()) -> list[Outgoing]:
        if self._cached_sent:
            return []
        self._cached_sent = True
        return [self._status("execution_cached", {"nodes": list(nodes)})]

    def convert(self, event: Event) -> list[Outgoing]:
        """The messages for one engine event (terminal events are produced by ``finish``)."""
        pid = self.prompt_id
        if isinstance(event, RunStarted):
            return []
        if isinstance(event, NodesCached):
            return self._ensure_cached(event.nodes)
        if isinstance(event, RunRetried):  # not ComfyUI's: a distributed worker was lost (kept in history)
            return [self._status("execution_retried", {"worker": event.worker, "reason": event.reason,
                                                       "attempt": event.attempt, "node_id": event.node_id})]
        out = self._ensure_cached()
        if isinstance(event, NodeStarted):
            out.append(executing(event.node_id, pid))
        elif isinstance(event, NodeProgress):
            out.append(progress(event.value, event.max, event.node_id, pid, event.text))
            if event.preview is not None:
                out.append(preview_frame(*event.preview))
        elif isinstance(event, NodeImage):
            out.append(image_frame(event.format, event.data))
        elif isinstance(event, NodeFinished) and event.ui is not None:
            out.append(Outgoing.json("executed", {"node": event.node_id, "display_node": event.node_id,
                                                  "output": event.ui, "prompt_id": pid}))
        return out

    def success(self) -> list[Outgoing]:
        """``execution_success`` (the worker sends ``executing`` with node null after the status update)."""
        return self._ensure_cached() + [self._status("execution_success", {})]

    def failed(self, event: RunFailed) -> list[Outgoing]:
        """``execution_error``."""
        data = {"node_id": event.node_id, "node_type": event.class_type, "executed": list(event.executed),
                "exception_message": event.exception_message, "exception_type": event.exception_type,
                "traceback": event.traceback.splitlines(keepends=True), "current_inputs": dict(event.inputs),
                "current_outputs": list(event.executed)}
        return self._ensure_cached() + [self._status("execution_error", data)]

    def interrupted(self, event: RunInterrupted | None) -> list[Outgoing]:
        """``execution_interrupted``."""
        data = {"node_id": event.node_id if event else None, "node_type": event.class_type if event else None,
                "executed": list(event.executed) if event else []}
        return self._ensure_cached() + [self._status("execution_interrupted", data)]
