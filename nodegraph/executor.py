"""The caching executor: runs the output nodes and their ancestors in topological order, reusing cached results."""

from __future__ import annotations

import hashlib
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cache import OutputCache
from .config import EngineConfig
from .context import ExecutionContext, Interrupted, InterruptFlag, Services
from .dynamic_inputs import nest
from .events import (
    Event,
    EventBus,
    NodeFinished,
    NodesCached,
    NodeStarted,
    RunFailed,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from .execution_lists import (
    Traits,
    ValueList,
    as_lists,
    element_calls,
    gather,
    list_output,
    merge_ui,
    own_key,
)
from .execution_state import Expand, RunState, upstream
from .expansion import expansion_of, plan_expansion, resolve_result
from .registry import Registry
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

    def raise_for_status(self) -> RunResult:
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

    def _collect(self, st: RunState, targets: Any) -> tuple[list[str], list[str], list[str]]:
        """Nodes to execute for ``targets`` in order (lazy links not followed), nodes taken from the cache, and the
        sources of lazy links left for later."""
        execute: set[str] = set()
        cached: set[str] = set()
        deferred: list[str] = []
        stack = list(targets)
        seen: set[str] = set()
        values = st.values
        while stack:
            nid = stack.pop()
            if nid in seen or nid in values:
                continue
            seen.add(nid)
            entry = None if nid in st.volatile else self.cache.get(st.keys[nid])
            if entry is not None:
                values[nid] = entry.outputs
                cached.add(nid)
                if nid in st.outputs and entry.ui is not None:
                    st.result.outputs[nid] = entry.ui
                continue
            execute.add(nid)
            node = st.nodes[nid]
            lazy = node.definition.exec_traits.lazy
            if lazy:
                for name, (src, _) in node.links.items():
                    (deferred if name in lazy else stack).append(src)
            else:
                stack.extend(src for src, _ in node.links.values())
        order = [nid for nid in st.order if nid in execute]
        hits = [nid for nid in st.order if nid in cached] if cached else []
        st.result.cached.extend(hits)
        return order, hits, [d for d in deferred if d not in seen]

    def _run(self, prompt: ValidatedPrompt, bus: EventBus, interrupt: InterruptFlag, result: RunResult,
             extra_data: dict[str, Any]) -> None:
        run_id = result.run_id
        keys, volatile = cache_keys(prompt, self.config)
        st = RunState(prompt, keys, volatile, set(prompt.outputs), bus, interrupt, result, extra_data,
                       nodes=prompt.nodes, order=prompt.order)
        order, hits, deferred = self._collect(st, prompt.outputs)
        bus.emit(RunStarted(run_id, tuple(prompt.order)))
        executing = set(order)
        later = upstream(prompt, deferred, executing | set(hits)) if deferred else set()
        skipped = tuple(nid for nid in prompt.order if nid not in executing and nid not in later)
        if skipped:
            bus.emit(NodesCached(run_id, skipped))
            for nid in result.cached:
                if nid in result.outputs:
                    bus.emit(NodeFinished(run_id, nid, prompt.nodes[nid].definition.name, result.outputs[nid], True))
        try:
            for nid in order:
                self._execute(st, nid)
        except Interrupted:
            current = st.current
            result.status = "interrupted"
            bus.emit(RunInterrupted(run_id, current.id if current else None,
                                    current.definition.name if current else None, tuple(result.executed)))
            return
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit from a node: its failure
            current = st.current
            if current is None or (isinstance(exc, KeyboardInterrupt) and _is_terminal_interrupt()):
                raise
            result.status = "error"
            result.error = RunFailed(
                run_id, current.id, current.definition.name, type(exc).__name__, str(exc),
                "".join(traceback.format_exception(exc)),
                {k: _describe_value(v) for k, v in st.kwargs.items()}, tuple(result.executed))
            bus.emit(result.error)
            return
        bus.emit(RunFinished(run_id, dict(result.outputs), tuple(result.executed)))

    def _demand(self, st: RunState, sources: list[str]) -> None:
        """Run (or take from the cache) what lazy inputs turned out to need."""
        order, hits, _ = self._collect(st, sources)
        if hits:
            st.bus.emit(NodesCached(st.result.run_id, tuple(hits)))
        for nid in order:
            self._execute(st, nid)

    def _execute(self, st: RunState, nid: str) -> None:
        """Execute one node (once per list element when its inputs are lists), cache and report it."""
        st.interrupt.check()
        current = st.current = st.nodes[nid]
        definition = current.definition
        values = st.values
        traits = definition.exec_traits
        kwargs = st.kwargs = dict(current.constants)
        class_type = definition.meta.name
        result = st.result
        run_id = result.run_id
        ctx = ExecutionContext(nid, class_type, run_id, self.config, self.services, st.bus, st.interrupt,
                               st.prompt.raw, st.extra_data, lambda: result.manifest)
        instance = definition.cls()
        listed = traits.input_is_list
        if traits.lazy:
            self._resolve_lazy(st, current, traits, instance, ctx, kwargs)
            st.current = current
            listed = listed or any(type(v) is ValueList for v in kwargs.values())
        else:
            for name, (src, idx) in current.links.items():
                value = kwargs[name] = values[src][idx]
                if type(value) is ValueList:
                    listed = True
        st.bus.emit(NodeStarted(run_id, nid, class_type))
        key = st.keys[nid]
        if listed:
            vals, ui = self._run_lists(st, current, traits, instance, ctx, kwargs)
        else:
            out = instance.execute(ctx, **nest(definition.meta.inputs, kwargs))
            if type(out) is tuple and len(out) == traits.n_outputs:
                vals, ui = out, None
            else:
                try:
                    vals, ui = self._call(current, out, allow_expand=True)
                except Expand as exp:
                    vals, ui = self._expand(st, current, exp), exp.ui
                    st.current, st.kwargs = current, kwargs
            for o in traits.list_outputs:
                vals = vals[:o] + (list_output(vals[o], key, o, class_type, definition.meta.outputs[o].type),
                                   ) + vals[o + 1:]
        values[nid] = vals
        if nid not in st.volatile:
            self.cache.put(key, vals, ui)
        result.executed.append(nid)
        if ui is not None and nid in st.outputs:
            result.outputs[nid] = ui
        st.bus.emit(NodeFinished(run_id, nid, class_type, ui))

    @staticmethod
    def _call(current: PlannedNode, out: Any,
              allow_expand: bool = False) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        """Check what ``execute`` returned: (values, ui); raises Expand for a subgraph to splice in."""
        vals, ui, expand = expansion_of(out)
        if expand is not None:
            if not allow_expand:
                raise TypeError(f"{current.definition.name} returned an expansion while running over a list; "
                                "expansion is supported only for nodes that run once (no list inputs)")
            raise Expand(vals, ui, expand)
        vals = tuple(vals) if vals is not None else ()
        expected = len(current.definition.meta.outputs)
        if len(vals) != expected:
            raise TypeError(f"{current.definition.name}.execute returned {len(vals)} value(s) but declares "
                            f"{expected} output(s); return a tuple with one value per output")
        return vals, ui

    def _run_lists(self, st: RunState, current: PlannedNode, traits: Traits, instance: Any,
                   ctx: ExecutionContext, kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        """Run a node over list inputs: whole lists (INPUT_IS_LIST) or once per element, each element cached."""
        key = st.keys[current.id]
        meta = current.definition.meta
        if traits.input_is_list:
            vals, ui = self._call(current, instance.execute(ctx, **nest(meta.inputs, as_lists(kwargs))))
            calls = [(vals, key)]
            uis = [ui]
        else:
            link_keys = {name: f"{st.keys[src]}/{idx}" for name, (src, idx) in current.links.items()}
            plan = element_calls(kwargs, link_keys, own_key(current, self.config))
            volatile = current.id in st.volatile
            calls, uis = [], []
            for i, (call, ekey) in enumerate(plan):
                st.interrupt.check()
                entry = None if volatile else self.cache.get(ekey)
                if entry is not None:
                    vals, ui = entry.outputs, entry.ui
                else:
                    st.kwargs = call
                    vals, ui = self._call(current, instance.execute(ctx, **nest(meta.inputs, call)))
                    for o in traits.list_outputs:
                        vals = vals[:o] + (list_output(vals[o], ekey, o, meta.name, meta.outputs[o].type),
                                           ) + vals[o + 1:]
                    if not volatile:
                        self.cache.put(ekey, vals, ui)
                calls.append((vals, ekey))
                uis.append(ui)
                if len(plan) > 1:
                    ctx.progress(i + 1, len(plan))
            st.kwargs = kwargs
        if traits.input_is_list:
            vals = calls[0][0]
            fixed = tuple(list_output(v, key, o, meta.name, meta.outputs[o].type) if o in traits.list_outputs else v
                          for o, v in enumerate(vals))
            return fixed, uis[0]
        return gather(calls, traits.list_outputs, len(meta.outputs), collapse=True), merge_ui(uis)

    def _expand(self, st: RunState, current: PlannedNode, exp: Expand) -> tuple[Any, ...]:
        """Splice in the subgraph a node returned, run it (cached nodes are reused) and resolve the node's result."""
        registry = self.services.get(Registry, lambda: Registry.from_config(self.config))
        planned, keys = plan_expansion(registry, self.config, current, st.keys[current.id], exp.graph, st.nodes,
                                       st.keys)
        outer = [src for node in planned for src, _ in node.links.values() if src in st.nodes and src not in st.values]
        if outer:
            self._demand(st, outer)
        if st.nodes is st.prompt.nodes:  # copy on first expansion: the validated prompt stays as it was
            st.nodes, st.order = dict(st.nodes), list(st.order)
        for node in planned:
            st.nodes[node.id] = node
            st.order.append(node.id)
            st.keys[node.id] = keys[node.id]
            if current.id in st.volatile or not node.definition.meta.deterministic or any(
                    src in st.volatile for src, _ in node.links.values()):
                st.volatile.add(node.id)
        for node in planned:
            if node.id in st.values:
                continue
            entry = None if node.id in st.volatile else self.cache.get(keys[node.id])
            if entry is not None:
                st.values[node.id] = entry.outputs
                st.result.cached.append(node.id)
                st.bus.emit(NodesCached(st.result.run_id, (node.id,)))
            else:
                self._execute(st, node.id)
        name = f"node {current.id} ({current.definition.name})"
        vals = resolve_result(exp.values, current.id, exp.graph, st.values, name)
        expected = len(current.definition.meta.outputs)
        if len(vals) != expected:
            raise TypeError(f"{name} expanded with {len(vals)} result value(s) but declares {expected} output(s); "
                            "give one [node_id, output_index] or value per output")
        return vals

    def _resolve_lazy(self, st: RunState, current: PlannedNode, traits: Traits, instance: Any,
                      ctx: ExecutionContext, kwargs: dict[str, Any]) -> None:
        """Fill the inputs, asking the node which lazy ones it needs and running only those branches."""
        values = st.values
        pending: dict[str, tuple[str, int]] = {}
        for name, (src, idx) in current.links.items():
            if name in traits.lazy and src not in values:
                pending[name] = (src, idx)
                kwargs[name] = None
            else:
                kwargs[name] = values[src][idx]
        while pending:
            needed = [n for n in instance.check_lazy_status(ctx, **kwargs) or () if n in pending]
            if not needed:
                break
            self._demand(st, [pending[n][0] for n in needed])
            st.current, st.kwargs = current, kwargs
            for name in needed:
                src, idx = pending.pop(name)
                kwargs[name] = values[src][idx]


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
