"""WebSocket messages of ComfyUI's API (which nodegraph serves) as nodegraph events, and run results from them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import jsonsafe
from ..events import (
    Event,
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from .result import Result

#: Messages that end a prompt's run (``executing`` with node null follows them).
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


class PromptRejected(ValueError):
    """The server refused the prompt (validation errors, queue full, bad request); the message says why."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        super().__init__(f"the server refused the prompt (HTTP {status}): {describe_rejection(body)}")


def describe_rejection(body: Any) -> str:
    """A readable summary of a 4xx answer (ComfyUI's ``{error, node_errors}`` shape)."""
    if not isinstance(body, dict):
        return str(body)[:2000]
    error = body.get("error") or {}
    parts = [str(error.get("message", "")) if isinstance(error, dict) else str(error)]
    if isinstance(error, dict) and error.get("details"):
        parts.append(str(error["details"]))
    for nid, info in (body.get("node_errors") or {}).items():
        for err in info.get("errors", []) if isinstance(info, dict) else []:
            parts.append(f"node {nid} ({info.get('class_type')}): {err.get('message')}: {err.get('details', '')}")
    return "; ".join(p for p in parts if p)


@dataclass
class RunTracker:
    """Follows one prompt's messages: events for callbacks, what executed or was cached, and node timings."""

    prompt_id: str
    prompt: dict[str, Any]
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    status: str | None = None
    error: dict[str, Any] | None = None
    done: bool = False
    started: float = field(default_factory=time.perf_counter)
    _current: tuple[str, float] | None = None

    def _class(self, node_id: str) -> str:
        node = self.prompt.get(node_id)
        return str(node.get("class_type", "")) if isinstance(node, dict) else ""

    def _close_node(self) -> None:
        if self._current is not None:
            nid, start = self._current
            self.timings[nid] = time.perf_counter() - start
            self._current = None

    def feed(self, kind: str, data: dict[str, Any]) -> Event | None:
        """Take one message of this prompt; returns the matching event (None for bookkeeping messages)."""
        pid = self.prompt_id
        if kind == "execution_start":
            return RunStarted(pid, tuple(self.prompt))
        if kind == "execution_cached":
            self.cached = [str(n) for n in data.get("nodes", [])]
            return NodesCached(pid, tuple(self.cached))
        if kind == "executing":
            self._close_node()
            node = data.get("node")
            if node is None:
                self.done = True
                return None
            node = str(node)
            if node not in self.executed:
                self.executed.append(node)
            self._current = (node, time.perf_counter())
            return NodeStarted(pid, node, self._class(node))
        if kind == "progress":
            text = data.get("text")
            return NodeProgress(pid, str(data.get("node", "")), int(data.get("value", 0)), int(data.get("max", 0)),
                                None, text if isinstance(text, str) else None)
        if kind == "executed":
            node = str(data.get("node", ""))
            self.outputs[node] = data.get("output") or {}
            return NodeFinished(pid, node, self._class(node), data.get("output"))
        if kind in TERMINAL:
            self._close_node()
            for node in data.get("executed", []) or []:
                if str(node) not in self.executed:
                    self.executed.append(str(node))
            if kind == "execution_success":
                self.status = "success"
                return RunFinished(pid, dict(self.outputs), tuple(self.executed))
            if kind == "execution_error":
                self.status = "error"
                self.error = {k: data.get(k) for k in ("node_id", "node_type", "exception_type",
                                                        "exception_message")}
                return RunFailed(pid, str(data.get("node_id", "")), str(data.get("node_type", "")),
                                 str(data.get("exception_type", "")), str(data.get("exception_message", "")),
                                 "".join(data.get("traceback") or []), executed=tuple(self.executed))
            self.status = "interrupted"
            return RunInterrupted(pid, data.get("node_id"), data.get("node_type"), tuple(self.executed))
        return None

    def apply_history(self, entry: dict[str, Any]) -> None:
        """Complete the picture from the prompt's ``/history`` entry (outputs, status, messages missed)."""
        self.outputs = dict(entry.get("outputs") or self.outputs)
        for kind, data in (entry.get("status") or {}).get("messages") or []:
            if kind in TERMINAL and self.status is None and isinstance(data, dict):
                self.feed(kind, data)
            if kind == "execution_cached" and not self.cached and isinstance(data, dict):
                self.cached = [str(n) for n in data.get("nodes", [])]
        if self.status is None:
            status = (entry.get("status") or {}).get("status_str")
            self.status = "success" if status == "success" else "error"

    def result(self, files: dict[tuple[str, str, str], bytes]) -> Result:
        """The Result of the finished prompt, its output files already downloaded."""
        def file(ref: dict[str, Any]) -> bytes:
            key = ref_key(ref)
            if key not in files:
                raise KeyError(f"{ref.get('filename')} was not downloaded; run with download=True")
            return files[key]

        executed = [n for n in self.executed if n not in self.cached]
        return Result(self.status or "error", self.prompt_id, dict(self.outputs), executed, list(self.cached),
                      dict(self.timings), time.perf_counter() - self.started, self.error, dict(self.prompt),
                      lambda: manifest_of(files), None, file, None, None)


def ref_key(ref: dict[str, Any]) -> tuple[str, str, str]:
    """(type, subfolder, filename) of a file entry."""
    return (str(ref.get("type") or "output"), str(ref.get("subfolder") or ""), str(ref["filename"]))


def manifest_of(files: dict[tuple[str, str, str], bytes]) -> dict[str, Any] | None:
    """The provenance manifest carried by the first downloaded PNG (its ``nodegraph`` text chunk)."""
    import io

    from PIL import Image

    for data in files.values():
        if data[:8] != b"\x89PNG\r\n\x1a\n":
            continue
        with Image.open(io.BytesIO(data)) as img:
            text = getattr(img, "text", {}).get("nodegraph")
        if text:
            try:
                value = jsonsafe.loads(text)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None
