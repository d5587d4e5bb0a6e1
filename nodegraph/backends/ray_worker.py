"""The worker side of the Ray backend: an actor holding one Engine (plugins, resident models, output cache).

The class is plain Python; ``RayBackend`` wraps it with ``ray.remote`` so this module imports without Ray.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..config import EngineConfig
from ..context import InterruptFlag
from ..events import EventBus, NodeFinished, RunFailed
from .routing import WorkerInfo
from .shipping import ShippedFile, collect_files

log = logging.getLogger(__name__)
_DONE = object()


@dataclass(frozen=True)
class RunSummary:
    """The last item of a run's stream: how it ended (the RunResult fields that travel)."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    executed: tuple[str, ...] = ()
    cached: tuple[str, ...] = ()
    error: RunFailed | None = None
    manifest: dict[str, Any] | None = None


@dataclass(frozen=True)
class Shipped:
    """A NodeFinished event with the bytes of the output files it names (workers without the head's disk)."""

    event: NodeFinished
    files: tuple[ShippedFile, ...]


def _worker_error(run_id: str, exc: BaseException) -> RunFailed:
    from ..validation import ValidationReport

    text = exc.render() if isinstance(exc, ValidationReport) else str(exc)
    return RunFailed(run_id, "", "", type(exc).__name__, f"the worker could not run the prompt: {text}",
                     "".join(traceback.format_exception(exc)))


class WorkerActor:
    """One worker: loads plugins through entry points and drop-in folders, keeps models and cache across runs."""

    def __init__(self, config: EngineConfig, name: str, warm_up: bool = False) -> None:
        from ..engine import Engine

        self.name = name
        self.engine = Engine(config)
        self._flags: dict[str, InterruptFlag] = {}
        self._lock = threading.Lock()
        if warm_up:  # pay torch's import before the first prompt, not during it
            try:
                import torch  # noqa: F401
            except ImportError:
                pass

    def info(self) -> WorkerInfo:
        """The node catalogue (name → version) and where this worker runs."""
        ray = sys.modules.get("ray")  # imported in every Ray worker process; absent when used in-process
        gpus = tuple(str(g) for g in ray.get_gpu_ids()) if ray is not None and ray.is_initialized() else ()
        registry = self.engine.registry
        return WorkerInfo(self.name, {n: d.meta.version for n, d in registry.nodes.items()}, socket.gethostname(),
                          os.getpid(), gpus, tuple(f"{p}: {e}" for p, e in registry.errors))

    def run(self, api: dict[str, Any], targets: list[str], run_id: str, extra_data: dict[str, Any],
            ship_files: bool = False) -> Iterator[Any]:
        """Validate and run a prompt, yielding its engine events as they happen, then a RunSummary.

        Closing the stream early (``ray.cancel``, a lost head) trips the run's interrupt flag, so the engine stops at
        its next cooperative check while the models stay loaded.
        """
        flag = InterruptFlag()
        with self._lock:
            self._flags[run_id] = flag
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        thread = threading.Thread(target=self._execute, args=(api, targets, run_id, extra_data, flag, items),
                                  name=f"nodegraph-run-{run_id[:8]}", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if item is _DONE:
                    return
                if ship_files and isinstance(item, NodeFinished) and item.ui:
                    files = collect_files(self.engine.config, item.ui)
                    if files:
                        item = Shipped(item, tuple(files))
                yield item
        finally:
            flag.set()
            with self._lock:
                self._flags.pop(run_id, None)

    def _execute(self, api: dict[str, Any], targets: list[str], run_id: str, extra_data: dict[str, Any],
                 flag: InterruptFlag, items: "queue.SimpleQueue[Any]") -> None:
        try:
            prompt = self.engine.prepare(api, targets or None)
            result = self.engine.run(prompt, bus=EventBus([items.put]), interrupt=flag, run_id=run_id,
                                     extra_data=extra_data)
            items.put(RunSummary(result.status, result.outputs, tuple(result.executed), tuple(result.cached),
                                 result.error, result._manifest))
        except BaseException as exc:  # report, never kill the actor: it holds models other prompts want
            log.exception("worker %s: prompt %s failed outside its nodes", self.name, run_id)
            error = _worker_error(run_id, exc)
            items.put(error)
            items.put(RunSummary("error", error=error))
        finally:
            items.put(_DONE)

    def interrupt(self, run_id: str) -> bool:
        """Trip the cooperative interrupt of ``run_id`` if it runs here; whether it did."""
        with self._lock:
            flag = self._flags.get(run_id)
        if flag is None:
            return False
        flag.set()
        return True

    def free(self, unload_models: bool = True) -> None:
        """Drop this worker's cached results and models."""
        self.engine.free(unload_models=unload_models)

    def ping(self) -> str:
        """Liveness check."""
        return self.name
