"""The Ray backend: the head validates and queues; worker actors (one per GPU) run whole prompts.

Routing prefers the idle worker whose cache already holds most of the prompt's work (its checkpoint, a shared
prefix), else the least recently used one; a worker whose node catalogue lacks a node of the prompt is never chosen.
Events stream back through a Ray streaming generator and are re-emitted on the head's bus unchanged. A worker that
dies mid-prompt is replaced, and the prompt runs again on another worker (a RunRetried event records it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..config import EngineConfig
from ..context import InterruptFlag
from ..events import EventBus, RunFailed, RunInterrupted, RunRetried
from ..executor import RunResult, cache_keys
from ..registry import Registry
from ..validation import ValidatedPrompt
from .ray_worker import RunSummary, Shipped, WorkerActor
from .routing import KeyMemory, RunTrack, WorkerInfo, WorkerSlot, choose, lacking, requirements
from .shipping import rename_entries, store_files

if TYPE_CHECKING:
    from ..engine import Engine

log = logging.getLogger(__name__)
POLL_S = 0.05


@dataclass
class RayRunResult(RunResult):
    """A RunResult that also names the worker of each attempt (more than one after a worker was lost)."""

    workers: list[str] = field(default_factory=list)


class WorkerLost(Exception):
    """The worker running a prompt died or became unreachable."""


class NoWorkerError(RuntimeError):
    """No live worker can run the prompt (a node it uses is installed on none of them)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the Ray backend needs Ray: pip install 'nodegraph[ray]' (or pip install 'ray>=2.40'), "
                           "or use --backend local") from None
    return ray


class RayBackend:
    """Runs prompts on Ray worker actors; ``slots`` prompts at once (one per worker)."""

    def __init__(self, registry: Registry, config: EngineConfig, *, address: str | None = None,
                 workers: int | None = None, cpus_per_worker: float = 1.0, use_gpus: bool | None = None,
                 worker_configs: list[EngineConfig] | None = None, shared_storage: bool = True,
                 cancel_grace_s: float = 2.0, max_attempts: int = 3, warm_up: bool = True,
                 start_timeout_s: float = 120.0, init_options: dict[str, Any] | None = None) -> None:
        self.ray = ray = _import_ray()
        self.registry, self.config = registry, config
        self.shared_storage, self.cancel_grace_s, self.max_attempts = shared_storage, cancel_grace_s, max_attempts
        self.cpus_per_worker, self.warm_up, self.start_timeout_s = cpus_per_worker, warm_up, start_timeout_s
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            options = {"include_dashboard": False, **(init_options or {})}
            try:
                ray.init(address=None if address in (None, "local") else address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise RuntimeError(f"cannot reach the Ray cluster at {address or 'a new local one'}: {exc}; start it "
                                   "with `ray start --head` or give --ray-address HOST:PORT") from exc
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.use_gpus = (gpus > 0 and not config.force_cpu) if use_gpus is None else use_gpus
        count = len(worker_configs) if worker_configs else workers or _env_workers() or (gpus if self.use_gpus else 2)
        self._configs = list(worker_configs) if worker_configs else [config] * count
        self._cond = threading.Condition()
        self._slots: list[WorkerSlot] = []
        self._starting: dict[int, WorkerInfo] = {}  # position → the catalogue its predecessor had
        self._generation = 0
        self._closed = False
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_engine(cls, engine: "Engine", *, address: str | None = None, **options: Any) -> "RayBackend":
        """Workers configured like ``engine`` (same home, models and plugin folders).

        Environment: ``NODEGRAPH_RAY_WORKERS`` (worker count; default one per GPU, or 2 CPU workers),
        ``NODEGRAPH_RAY_CPUS_PER_WORKER`` (default 1) and ``NODEGRAPH_RAY_SHARED_DISK=0`` when the workers do not
        see the head's home folder (outputs then come back as bytes).
        """
        cpus = os.environ.get("NODEGRAPH_RAY_CPUS_PER_WORKER")
        if cpus and "cpus_per_worker" not in options:
            try:
                options["cpus_per_worker"] = float(cpus)
            except ValueError:
                raise ValueError(f"NODEGRAPH_RAY_CPUS_PER_WORKER={cpus!r}: give a number, e.g. 1 or 0.5") from None
        if "shared_storage" not in options:
            options["shared_storage"] = os.environ.get("NODEGRAPH_RAY_SHARED_DISK", "1") not in ("0", "false", "no")
        return cls(engine.registry, engine.config, address=address, **options)

    # ---- workers ---------------------------------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """How many prompts run at once: the number of worker positions."""
        return len(self._configs)

    def _actor_class(self) -> Any:
        resources: dict[str, Any] = {"num_cpus": self.cpus_per_worker, "max_concurrency": 4, "max_restarts": 0,
                                     "scheduling_strategy": "SPREAD"}
        if self.use_gpus:
            resources["num_gpus"] = 1
        return self.ray.remote(WorkerActor).options(**resources)

    def _launch(self, position: int) -> tuple[Any, Any]:
        with self._cond:
            self._generation += 1
            generation = self._generation
        name = f"worker-{position}" + (f".{generation}" if generation > len(self._configs) else "")
        actor = self._actor_class().remote(self._configs[position], name, self.warm_up)
        return actor, actor.info.remote()

    def _start_all(self) -> None:
        ray = self.ray
        need = self.cpus_per_worker * self.slots
        have = ray.cluster_resources().get("CPU", 0)
        if need > have or (self.use_gpus and self.slots > ray.cluster_resources().get("GPU", 0)):
            raise RuntimeError(f"the Ray cluster cannot hold {self.slots} worker(s) of {self.cpus_per_worker} CPU(s)"
                               f"{' and 1 GPU' if self.use_gpus else ''} each (it has {have:g} CPUs); set "
                               "NODEGRAPH_RAY_WORKERS lower or add machines (ray start --address=HEAD:6379)")
        launched = [self._launch(i) for i in range(self.slots)]
        try:
            infos = ray.get([ref for _, ref in launched], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(f"the Ray workers did not start within {self.start_timeout_s:g} s: the cluster has no "
                               "free CPUs/GPUs for them (see `ray status`); free some or add machines") from None
        for position, ((actor, _), info) in enumerate(zip(launched, infos)):
            self._add_slot(actor, info, position)

    def _add_slot(self, actor: Any, info: WorkerInfo, position: int) -> None:
        for error in info.plugin_errors:
            log.warning("%s on %s: plugin %s", info.name, info.host, error)
        slot = WorkerSlot(info.name, actor, info, KeyMemory(self.config.cache_max_entries), position=position)
        with self._cond:
            self._slots.append(slot)
            self._cond.notify_all()

    def _replace(self, slot: WorkerSlot) -> None:
        """Start a worker in a lost one's position (in the background; prompts wait for it if need be)."""
        with self._cond:
            if self._closed or slot.position in self._starting:
                return
            self._starting[slot.position] = slot.info

        def start() -> None:
            try:
                actor, ref = self._launch(slot.position)
                info = self.ray.get(ref, timeout=self.start_timeout_s)
                if not self._closed:
                    self._add_slot(actor, info, slot.position)
                    log.warning("%s replaces %s", info.name, slot.name)
            except Exception as exc:
                log.error("could not start a worker to replace %s: %s", slot.name, exc)
            finally:
                with self._cond:
                    self._starting.pop(slot.position, None)
                    self._cond.notify_all()

        threading.Thread(target=start, name=f"nodegraph-replace-{slot.name}", daemon=True).start()

    def worker_status(self) -> list[dict[str, Any]]:
        """Each live worker: name, host, pid, GPUs, busy, runs and how many cache keys the head knows it holds."""
        with self._cond:
            return [{"name": s.name, "host": s.info.host, "pid": s.info.pid, "gpus": list(s.info.gpus),
                     "busy": s.busy, "runs": s.runs, "known_keys": len(s.memory)} for s in self._slots if s.alive]

    def actor(self, name: str) -> Any:
        """The Ray actor handle of a live worker (for operations and tests)."""
        with self._cond:
            for s in self._slots:
                if s.name == name and s.alive:
                    return s.actor
        raise KeyError(f"no live worker named {name!r}; live: {[s['name'] for s in self.worker_status()]}")

    # ---- dispatch --------------------------------------------------------------------------------------------------

    def _explain(self, prompt: ValidatedPrompt, needs: dict[str, str]) -> tuple[str, str, str]:
        live = [s for s in self._slots if s.alive] + \
            [WorkerSlot(i.name + " (starting)", None, i) for i in self._starting.values()]
        if not live:
            return "", "", "no Ray worker is alive; check the cluster (ray status) and the head's log"
        node_id, class_type = "", ""
        for nid in prompt.order:
            d = prompt.nodes[nid].definition
            if not any(not lacking(s.info.nodes, {d.name: d.meta.version}) for s in live):
                node_id, class_type = nid, d.name
                break
        why = "; ".join(f"{s.name}: {', '.join(lacking(s.info.nodes, needs))}" for s in live)
        return node_id, class_type, (f"no worker can run this prompt ({why}); install the same plugins at the same "
                                     "versions on the workers as on the head")

    def _acquire(self, prompt: ValidatedPrompt, needs: dict[str, str], keys: list[str],
                 interrupt: InterruptFlag) -> WorkerSlot | None:
        """An idle worker able to run the prompt (waiting while all are busy); None if interrupted while waiting."""
        with self._cond:
            while True:
                if self._closed:
                    raise NoWorkerError("", "", "the Ray backend was closed")
                able = [s for s in self._slots if s.alive and s.can_run(needs)]
                if not able and not any(not lacking(i.nodes, needs) for i in self._starting.values()):
                    raise NoWorkerError(*self._explain(prompt, needs))
                idle = [s for s in able if s.busy == 0]
                if idle:
                    slot = choose(idle, keys)
                    slot.busy += 1
                    slot.runs += 1
                    slot.last_used = time.monotonic()
                    return slot
                if interrupt.is_set():
                    return None
                self._cond.wait(POLL_S)

    def _release(self, slot: WorkerSlot) -> None:
        with self._cond:
            slot.busy -= 1
            self._cond.notify_all()

    def _lost(self, slot: WorkerSlot, reason: str) -> None:
        with self._cond:
            if not slot.alive:
                return
            slot.alive = False
        log.error("%s (pid %s on %s) was lost: %s", slot.name, slot.info.pid, slot.info.host, reason)
        try:
            self.ray.kill(slot.actor)
        except Exception:
            pass
        self._replace(slot)

    def run(self, prompt: ValidatedPrompt, *, run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            bus: EventBus | None = None, interrupt: InterruptFlag | None = None) -> RayRunResult:
        """Run ``prompt`` on the best worker; retried elsewhere (up to ``max_attempts``) when its worker dies."""
        bus, interrupt = bus or EventBus(), interrupt or InterruptFlag()
        run_id = run_id or uuid.uuid4().hex
        needs = requirements(prompt)
        keys, volatile = cache_keys(prompt, self.config)
        wanted = [k for nid, k in keys.items() if nid not in volatile]
        used: list[str] = []
        for attempt in range(1, self.max_attempts + 1):
            try:
                slot = self._acquire(prompt, needs, wanted, interrupt)
            except NoWorkerError as exc:
                return self._fail(bus, run_id, used, "NoWorkerAvailable", *exc.args)
            if slot is None:
                return self._interrupted(bus, run_id, used, RunTrack())
            used.append(slot.name)
            track = RunTrack()
            try:
                return self._attempt(slot, prompt, run_id, extra_data or {}, bus, interrupt, track, used,
                                     keys, volatile)
            except WorkerLost as lost:
                self._lost(slot, str(lost))
                if interrupt.is_set():
                    return self._interrupted(bus, run_id, used, track)
                if attempt == self.max_attempts:
                    return self._fail(bus, run_id, used, "WorkerLost", track.node or "", track.class_type or "",
                                      f"{slot.name} was lost while running this prompt ({lost}) and "
                                      f"{attempt} attempt(s) failed; see the head's log")
                bus.emit(RunRetried(run_id, slot.name, str(lost), attempt, track.node))
            finally:
                self._release(slot)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fail(self, bus: EventBus, run_id: str, used: list[str], kind: str, node_id: str, class_type: str,
              message: str) -> RayRunResult:
        error = RunFailed(run_id, node_id, class_type, kind, message)
        bus.emit(error)
        return RayRunResult(run_id, "error", error=error, workers=used)

    def _interrupted(self, bus: EventBus, run_id: str, used: list[str], track: RunTrack) -> RayRunResult:
        bus.emit(RunInterrupted(run_id, track.node, track.class_type, tuple(track.executed)))
        return RayRunResult(run_id, "interrupted", executed=list(track.executed), cached=list(track.cached),
                            workers=used)

    def _attempt(self, slot: WorkerSlot, prompt: ValidatedPrompt, run_id: str, extra_data: dict[str, Any],
                 bus: EventBus, interrupt: InterruptFlag, track: RunTrack, used: list[str],
                 keys: dict[str, str], volatile: set[str]) -> RayRunResult:
        ray = self.ray
        from ray.exceptions import ObjectLostError, RayActorError, TaskCancelledError, WorkerCrashedError

        stream = slot.actor.run.options(num_returns="streaming").remote(
            prompt.raw, list(prompt.outputs), run_id, extra_data, not self.shared_storage)
        renamed: dict[tuple[str, str, str], str] = {}
        summary: RunSummary | None = None
        asked_at: float | None = None
        while True:
            if interrupt.is_set() and asked_at is None:
                asked_at = time.monotonic()
                slot.actor.interrupt.remote(run_id)  # the cooperative per-step check; models stay loaded
            if asked_at is not None and time.monotonic() - asked_at > self.cancel_grace_s:
                # A node that never checks: cancel the task (its stream's end trips the flag too) and stop waiting;
                # the worker finishes that node in the background and keeps its models.
                ray.cancel(stream)
                track.remember(slot.memory, keys, volatile)
                return self._interrupted(bus, run_id, used, track)
            ready, _ = ray.wait([stream], timeout=POLL_S)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                break
            except TaskCancelledError:
                track.remember(slot.memory, keys, volatile)
                return self._interrupted(bus, run_id, used, track)
            except (RayActorError, WorkerCrashedError, ObjectLostError) as exc:
                raise WorkerLost(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
            if isinstance(item, RunSummary):
                summary = item
                continue
            if isinstance(item, Shipped):
                renamed.update(store_files(self.config, list(item.files)))
                item = replace(item.event, ui=rename_entries(item.event.ui, renamed))
            track.observe(item)
            bus.emit(item)
        if summary is None:
            raise WorkerLost("its event stream ended without a result")
        track.remember(slot.memory, keys, volatile)
        outputs = {nid: rename_entries(ui, renamed) for nid, ui in summary.outputs.items()}
        manifest = summary.manifest
        return RayRunResult(run_id, summary.status, outputs, list(summary.executed), list(summary.cached),
                            summary.error, manifest_source=lambda: manifest, workers=used)

    # ---- maintenance -----------------------------------------------------------------------------------------------

    def free(self, unload_models: bool = True) -> None:
        """Drop every worker's cached results (and models)."""
        with self._cond:
            slots = [s for s in self._slots if s.alive]
        for s in slots:
            s.memory.clear()
        try:
            self.ray.get([s.actor.free.remote(unload_models) for s in slots], timeout=60)
        except Exception as exc:
            log.error("freeing the Ray workers failed: %s", exc)

    def close(self) -> None:
        """Stop the workers; shut Ray down if this backend started it."""
        with self._cond:
            self._closed = True
            slots, self._slots = list(self._slots), []
            self._cond.notify_all()
        for s in slots:
            try:
                self.ray.kill(s.actor)
            except Exception:
                pass
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


def _env_workers() -> int | None:
    value = os.environ.get("NODEGRAPH_RAY_WORKERS")
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"NODEGRAPH_RAY_WORKERS={value!r}: give a whole number of workers, e.g. 2") from None
