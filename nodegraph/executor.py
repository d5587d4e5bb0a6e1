"""The caching executor: runs the output nodes and their ancestors in topological order, reusing cached results."""

from __future__ import annotations

import hashlib
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .cache import OutputCache
from .config import EngineConfig
from .context import ExecutionContext, InterruptFlag, Interrupted, Services
from .events import (Event, EventBus, NodeFinished, NodesCached, NodeStarted, RunFailed, RunFinished,
                     RunInterrupted, RunStarted)
from .node import NodeOutput
from .validation import PlannedNode, ValidatedPrompt


class NodeExecutionError(RuntimeError):
    """A node raised while executing; carries what a person needs to find the problem."""

    def __init__(self, event: RunFailed) -> None:
        super().__init__(f"node {event.node_id} ({event.class_type}) failed: "
                         f"{event.exception_type}: {event.exception_message}")
        self.event = event


@dataclass
class RunResult:
    """How a run ended: status, UI outputs by node id, what executed and what came from the cache."""

    run_id: str
    status: str  # "success" | "error" | "interrupted"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: RunFailed | None = None
    events: list[Event] = field(default_factory=list)
    #: Why the run ended when its nodes were not the cause (a worker process restarted, lost, …), else None.
    reason: str | None = None
    manifest_source: Callable[[], dict[str, Any] | None] | None = field(default=None, repr=False)
    _manifest: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The provenance manifest of this run (built once, on first use)."""
        if self._manifest is None and self.manifest_source is not None:
            self._manifest = self.manifest_source()
        return self._manifest

    def raise_for_status(self) -> "RunResult":
        """Raise NodeExecutionError or Interrupted unless the run succeeded."""
        if self.status == "error" and self.error is not None:
            raise NodeExecutionError(self.error)
        if self.status == "interrupted":
            raise Interrupted("the run was interrupted")
        return self


def _constant_repr(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def cache_keys(prompt: ValidatedPrompt, config: Any = None) -> tuple[dict[str, str], set[str]]:
    """Content hash of every planned node, built incrementally from its inputs' keys; and the volatile nodes.

    The key covers the class, its version, the constants, the keys of linked inputs and the node's fingerprint;
    not the node id, so an identical subgraph in another workflow hits the same entries. Non-deterministic nodes
    and their descendants are volatile: never looked up, never stored.
    """
    keys: dict[str, str] = {}
    volatile: set[str] = set()
    for nid in prompt.order:
        node = prompt.nodes[nid]
        meta = node.definition.meta
        fp = node.definition.cls.fingerprint(config, **node.constants)
        material = (meta.name, meta.version, sorted((k, _constant_repr(v)) for k, v in node.constants.items()),
                    sorted((k, keys[src], idx) for k, (src, idx) in node.links.items()), fp)
        if not meta.deterministic or any(src in volatile for src, _ in node.links.values()):
            volatile.add(nid)
        keys[nid] = hashlib.blake2b(repr(material).encode(), digest_size=16).hexdigest()
    return keys, volatile


class Executor:
    """Runs validated prompts against a shared cache and services; one run at a time."""

    def __init__(self, config: EngineConfig, cache: OutputCache | None = None,
                 services: Services | None = None) -> None:
        self.config = config
        self.cache = cache if cache is not None else OutputCache(config.cache_max_entries, config.cache_max_bytes)
        self.services = services if services is not None else Services()
        self._lock = threading.Lock()

    def run(self, prompt: ValidatedPrompt, *, bus: EventBus | None = None, interrupt: InterruptFlag | None = None,
            run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            record_events: bool = False,
            manifest: Callable[[], dict[str, Any] | None] | None = None) -> RunResult:
        """Execute ``prompt``; events go to ``bus``. Never raises for node failures: see ``RunResult.status``."""
        bus = bus or EventBus()
        interrupt = interrupt or InterruptFlag()
        result = RunResult(run_id=run_id or uuid.uuid4().hex, status="success", manifest_source=manifest)
        unsubscribe = bus.subscribe(result.events.append) if record_events else None
        try:
            with self._lock:
                self._run(prompt, bus, interrupt, result, extra_data or {})
        finally:
            if unsubscribe:
                unsubscribe()
        return result

    def _plan(self, prompt: ValidatedPrompt) -> tuple[dict[str, str], set[str], list[str], dict[str, Any]]:
        """Keys, volatile nodes, the nodes to execute in order, and cache entries pinned for the rest."""
        keys, volatile = cache_keys(prompt, self.config)
        execute: set[str] = set()
        pinned: dict[str, Any] = {}
        stack = list(prompt.outputs)
        seen: set[str] = set()
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            entry = None if nid in volatile else self.cache.get(keys[nid])
            if entry is not None:
                pinned[nid] = entry
            else:
                execute.add(nid)
                stack.extend(src for src, _ in prompt.nodes[nid].links.values())
        order = [nid for nid in prompt.order if nid in execute]
        return keys, volatile, order, {nid: pinned[nid] for nid in prompt.order if nid in pinned}

    def _run(self, prompt: ValidatedPrompt, bus: EventBus, interrupt: InterruptFlag, result: RunResult,
             extra_data: dict[str, Any]) -> None:
        run_id = result.run_id
        keys, volatile, order, pinned = self._plan(prompt)
        outputs = set(prompt.outputs)
        bus.emit(RunStarted(run_id, tuple(prompt.order)))
        values: dict[str, tuple[Any, ...]] = {}
        for nid, entry in pinned.items():
            values[nid] = entry.outputs
            result.cached.append(nid)
            if nid in outputs and entry.ui is not None:
                result.outputs[nid] = entry.ui
        executing = set(order)
        skipped = tuple(nid for nid in prompt.order if nid not in executing)  # cached, or not needed again
        if skipped:
            bus.emit(NodesCached(run_id, skipped))
            for nid in result.cached:
                if nid in result.outputs:
                    bus.emit(NodeFinished(run_id, nid, prompt.nodes[nid].definition.name, result.outputs[nid], True))

        current: PlannedNode | None = None
        kwargs: dict[str, Any] = {}
        try:
            for nid in order:
                interrupt.check()
                current = prompt.nodes[nid]
                kwargs = dict(current.constants)
                for name, (src, idx) in current.links.items():
                    kwargs[name] = values[src][idx]
                class_type = current.definition.name
                bus.emit(NodeStarted(run_id, nid, class_type))
                ctx = ExecutionContext(nid, class_type, run_id, self.config, self.services, bus, interrupt,
                                       prompt.raw, extra_data, lambda: result.manifest)
                out = current.definition.cls().execute(ctx, **kwargs)
                vals, ui = (out.values, out.ui) if isinstance(out, NodeOutput) else (out, None)
                vals = tuple(vals) if vals is not None else ()
                expected = len(current.definition.meta.outputs)
                if len(vals) != expected:
                    raise TypeError(f"{class_type}.execute returned {len(vals)} value(s) but declares {expected} "
                                    "output(s); return a tuple with one value per output")
                values[nid] = vals
                if nid not in volatile:
                    self.cache.put(keys[nid], vals, ui)
                result.executed.append(nid)
                if ui is not None and nid in outputs:
                    result.outputs[nid] = ui
                bus.emit(NodeFinished(run_id, nid, class_type, ui))
        except Interrupted:
            result.status = "interrupted"
            bus.emit(RunInterrupted(run_id, current.id if current else None,
                                    current.definition.name if current else None, tuple(result.executed)))
            return
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit from a node: its failure
            if current is None or (isinstance(exc, KeyboardInterrupt) and _is_terminal_interrupt()):
                raise
            result.status = "error"
            result.error = RunFailed(
                run_id, current.id, current.definition.name, type(exc).__name__, str(exc),
                "".join(traceback.format_exception(exc)),
                {k: _describe_value(v) for k, v in kwargs.items()}, tuple(result.executed))
            bus.emit(result.error)
            return
        bus.emit(RunFinished(run_id, dict(result.outputs), tuple(result.executed)))


def _is_terminal_interrupt() -> bool:
    """Whether a KeyboardInterrupt may be the terminal's Ctrl-C: only the main thread receives those."""
    return threading.current_thread() is threading.main_thread()


def _describe_value(value: Any) -> str:
    """A short, safe description of an input value for error reports."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={getattr(value, 'dtype', '?')})"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
