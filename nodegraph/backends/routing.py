"""Choosing a worker for a prompt: node catalogues (who can run it) and cache affinity (who has it half done)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..validation import ValidatedPrompt


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports when it starts: its node catalogue with versions, and where it runs."""

    name: str
    nodes: dict[str, str]
    host: str = ""
    pid: int = 0
    gpus: tuple[str, ...] = ()
    plugin_errors: tuple[str, ...] = ()


def requirements(prompt: ValidatedPrompt) -> dict[str, str]:
    """The node classes a prompt runs, with the versions the head validated it against."""
    return {n.definition.name: n.definition.meta.version for n in prompt.nodes.values()}


def lacking(nodes: dict[str, str], needs: dict[str, str]) -> list[str]:
    """What a catalogue lacks for ``needs``, one phrase each (empty: it can run the prompt)."""
    out = []
    for name, version in sorted(needs.items()):
        have = nodes.get(name)
        if have is None:
            out.append(f"{name} is not installed")
        elif have != version:
            out.append(f"{name} is {have}, the head has {version}")
    return out


#: Keys remembered per worker when its cache has no entry cap (its cache is bounded by bytes, which the head cannot
#: see; a key costs about 150 bytes here).
DEFAULT_KEYS = 65_536


class KeyMemory:
    """The cache keys a worker recently computed, with what each cost (seconds); bounded, least recent out first."""

    def __init__(self, max_entries: int | None = None) -> None:
        self.max_entries = DEFAULT_KEYS if max_entries is None else max_entries
        self._keys: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str, seconds: float) -> None:
        """Remember ``key`` (or refresh it), worth ``seconds`` of work."""
        old = self._keys.pop(key, 0.0)
        self._keys[key] = max(seconds, old, 1e-3)
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)

    def touch(self, key: str) -> None:
        """Mark a known key recently used (a cache hit on the worker)."""
        if key in self._keys:
            self._keys.move_to_end(key)

    def score(self, keys: Iterable[str]) -> float:
        """Seconds of work among ``keys`` this worker would not redo."""
        return sum(self._keys.get(k, 0.0) for k in keys)

    def clear(self) -> None:
        """Forget everything (the worker's cache was freed)."""
        self._keys.clear()


@dataclass
class WorkerSlot:
    """The head's view of one worker: its handle, catalogue, load and what its cache holds."""

    name: str
    actor: Any
    info: WorkerInfo
    memory: KeyMemory = field(default_factory=KeyMemory)
    busy: int = 0
    alive: bool = True
    runs: int = 0
    last_used: float = 0.0
    #: Index of the worker position it fills (a replacement keeps its predecessor's).
    position: int = 0

    def can_run(self, needs: dict[str, str]) -> bool:
        """Whether its catalogue has every node the prompt uses, at the same version."""
        return not lacking(self.info.nodes, needs)


def choose(candidates: list[WorkerSlot], keys: Iterable[str]) -> WorkerSlot:
    """The worker holding the most work of this prompt; ties → least busy, then least recently used."""
    keys = list(keys)
    return max(candidates, key=lambda s: (s.memory.score(keys), -s.busy, -s.last_used))


@dataclass
class RunTrack:
    """What the head saw of one attempt: node timings, the node running now, what executed and came cached."""

    started: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    node: str | None = None
    class_type: str | None = None

    def node_started(self, node_id: str, class_type: str) -> None:
        """A NodeStarted event."""
        self.node, self.class_type = node_id, class_type
        self.started[node_id] = time.monotonic()

    def node_finished(self, node_id: str, cached: bool) -> None:
        """A NodeFinished event."""
        if cached:
            return
        self.executed.append(node_id)
        if node_id in self.started:
            self.seconds[node_id] = time.monotonic() - self.started[node_id]

    def observe(self, event: Any) -> None:
        """Follow one event of the worker's stream (node started, finished, or the cached set)."""
        from ..events import NodeFinished, NodesCached, NodeStarted

        if isinstance(event, NodeStarted):
            self.node_started(event.node_id, event.class_type)
        elif isinstance(event, NodeFinished):
            self.node_finished(event.node_id, event.cached)
        elif isinstance(event, NodesCached):
            self.cached = list(event.nodes)

    def remember(self, memory: KeyMemory, keys: dict[str, str], volatile: set[str]) -> None:
        """Record in a worker's memory what this attempt left in its cache."""
        for nid in self.cached:
            memory.touch(keys[nid])
        for nid in self.executed:
            if nid not in volatile and nid in keys:
                memory.add(keys[nid], self.seconds.get(nid, 0.0))
