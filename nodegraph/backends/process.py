"""The worker-process backend: prompts run in a child process that the server can end and start again.

A node that never checks for interrupts cannot be stopped inside a thread, but its process can be: when an interrupt
is not honoured within ``interrupt_grace_s`` seconds the child is killed, the prompt ends interrupted (its result's
``reason`` says why), and a fresh child starts for the rest of the queue. A child that dies on its own (a node calling
``os._exit``, the kernel's OOM killer) fails its prompt the same way. The child builds its Engine from the same
EngineConfig (plugin folders included) and holds it in the Ray backend's ``WorkerActor`` and reports runs with the same
``RunSummary`` items, so the server re-emits the same events as in-process. It shares the
server's disk, so output files need no shipping. Processes start with ``spawn`` (forking a process that holds torch
threads is unsafe).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any, Callable

from ..config import EngineConfig
from ..context import InterruptFlag
from ..events import EventBus, RunFailed, RunInterrupted
from ..executor import RunResult
from ..validation import ValidatedPrompt
from .ray_worker import RunSummary, WorkerActor, _worker_error
from .routing import RunTrack, WorkerInfo

log = logging.getLogger(__name__)
POLL_S = 0.05
#: Seconds a node may ignore an interrupt before its worker process is ended (``--interrupt-grace``).
DEFAULT_GRACE_S = 10.0
#: The server's token variable: the child has no use for it.
_SECRET_ENV = ("NODEGRAPH_TOKEN",)


class WorkerProcessError(RuntimeError):
    """The worker process could not start or answer."""


# ---- the child ---------------------------------------------------------------------------------------------------


def _run_prompt(actor: WorkerActor, send: Callable[[Any], None], flag: InterruptFlag, run_id: str,
                api: dict[str, Any], targets: list[str], extra_data: dict[str, Any]) -> None:
    """Run one prompt in the child: each event is sent as it happens (so the server knows which node was running
    even if the next instant kills the process), then the summary, then the end marker."""
    engine = actor.engine
    try:
        prompt = engine.prepare(api, targets or None)
        result = engine.run(prompt, bus=EventBus([lambda event: send(("event", run_id, event))]), interrupt=flag,
                            run_id=run_id, extra_data=extra_data)
        summary = RunSummary(result.status, result.outputs, tuple(result.executed), tuple(result.cached),
                             result.error, result._manifest)
    except BaseException as exc:  # outside the nodes (e.g. the prompt no longer validates here): report it
        log.exception("worker process: prompt %s failed outside its nodes", run_id)
        summary = RunSummary("error", error=_worker_error(run_id, exc))
        send(("event", run_id, summary.error))
    try:
        send(("event", run_id, summary))
    except Exception as exc:  # outputs that do not pickle (a plugin put an object in its UI payload)
        error = RunFailed(run_id, "", "", "UnsendableResult", f"the prompt's outputs could not be sent from the "
                          f"worker process: {exc}; a node's UI payload must hold only JSON data")
        send(("event", run_id, error))
        send(("event", run_id, RunSummary("error", error=error)))
    finally:
        send(("end", run_id))


def child_main(config: EngineConfig, conn: Any, name: str) -> None:
    """The worker process: build the engine, then serve run/interrupt/free/stop commands until the server goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the server's to handle
    for key in _SECRET_ENV:
        os.environ.pop(key, None)
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock:
            conn.send(message)

    try:
        actor = WorkerActor(config, name, warm_up=True)
        send(("ready", actor.info()))
    except BaseException as exc:  # report why, then end: the server fails the prompt with this text
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    flags: dict[str, InterruptFlag] = {}
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: end at once, whatever a node is doing
        op = command[0]
        if op == "run":
            flags = {command[1]: InterruptFlag()}  # one prompt at a time
            threading.Thread(target=_run_prompt, args=(actor, send, flags[command[1]], *command[1:]),
                             name=f"nodegraph-run-{command[1][:8]}", daemon=True).start()
        elif op == "interrupt" and command[1] in flags:
            flags[command[1]].set()
        elif op == "free":
            try:
                actor.free(command[1])
            finally:
                send(("freed",))
        elif op == "stop":
            os._exit(0)


# ---- the server side ---------------------------------------------------------------------------------------------


class ProcessBackend:
    """Runs prompts one at a time in a worker process; ends and replaces it when an interrupt is not honoured."""

    slots = 1

    def __init__(self, config: EngineConfig, *, interrupt_grace_s: float = DEFAULT_GRACE_S,
                 start_timeout_s: float = 300.0, name: str = "worker-process") -> None:
        if interrupt_grace_s < 0:
            raise ValueError(f"interrupt grace {interrupt_grace_s!r} s: give zero or more seconds, e.g. 10")
        self.config, self.name = config, name
        self.interrupt_grace_s, self.start_timeout_s = interrupt_grace_s, start_timeout_s
        self._mp = multiprocessing.get_context("spawn")
        self._run_lock = threading.Lock()  # one prompt (or free) at a time
        self._send_lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self._started_at = 0.0
        self.info: WorkerInfo | None = None
        #: Seconds the last worker process took from start to ready (imports, plugins, engine).
        self.last_start_s: float | None = None
        #: How many times the worker process was replaced.
        self.restarts = 0
        self._closed = False
        self._start()

    # ---- the process -----------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The worker process id (None before it starts)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=child_main, args=(self.config, child, self.name), name=self.name, daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self.info, self._started_at = proc, parent, None, time.monotonic()

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _end(self) -> None:
        """Kill the worker process (whatever it runs) and reap it."""
        proc, conn = self._proc, self._conn
        if proc is not None and proc.is_alive():
            proc.kill()
        if proc is not None:
            proc.join(10)
        if conn is not None:
            conn.close()

    def _restart(self, why: str) -> None:
        self._end()
        if self._closed:
            return
        self.restarts += 1
        log.warning("worker process restarted (%s)", why)
        self._start()

    def wait_ready(self, interrupt: InterruptFlag | None = None) -> bool:
        """Wait until the worker process has built its engine; False if ``interrupt`` was set first.

        Raises WorkerProcessError when it fails to start (it is then started again for the next prompt)."""
        while self.info is None:
            if interrupt is not None and interrupt.is_set():
                return False
            waited = time.monotonic() - self._started_at
            try:
                ready = self._conn.poll(POLL_S)
                message = self._conn.recv() if ready else None
            except (EOFError, OSError):
                message = ("failed", f"it exited with code {self._proc.exitcode}")
            if message is None and waited > self.start_timeout_s:
                message = ("failed", f"it did not start within {self.start_timeout_s:g} s")
            if message is None:
                continue
            if message[0] == "ready":
                self.info, self.last_start_s = message[1], time.monotonic() - self._started_at
                for error in self.info.plugin_errors:
                    log.warning("worker process: plugin %s", error)
                log.info("worker process %s ready in %.2f s", self._proc.pid, self.last_start_s)
            else:
                self._restart("it failed to start")
                raise WorkerProcessError(f"the worker process failed to start: {message[1]}; see the server log")
        return True

    # ---- running ---------------------------------------------------------------------------------------------------

    def run(self, prompt: ValidatedPrompt, *, run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            bus: EventBus | None = None, interrupt: InterruptFlag | None = None) -> RunResult:
        """Run ``prompt`` in the worker process, re-emitting its events on ``bus`` unchanged; never raises."""
        bus, interrupt = bus or EventBus(), interrupt or InterruptFlag()
        run_id = run_id or uuid.uuid4().hex
        track = RunTrack()
        with self._run_lock:
            if self._closed:
                return self._failed(bus, run_id, track, "WorkerProcessClosed", "the worker process backend was "
                                    "closed (the server is stopping)")
            try:
                if not self.wait_ready(interrupt):
                    return self._interrupted(bus, run_id, track, None)
                self._send(("run", run_id, prompt.raw, list(prompt.outputs), extra_data or {}))
            except WorkerProcessError as exc:
                return self._failed(bus, run_id, track, "WorkerProcessFailed", str(exc))
            except OSError as exc:
                return self._lost(bus, run_id, track, interrupt, f"it could not be reached ({exc})")
            return self._follow(bus, run_id, track, interrupt)

    def _follow(self, bus: EventBus, run_id: str, track: RunTrack, interrupt: InterruptFlag) -> RunResult:
        summary: RunSummary | None = None
        asked_at: float | None = None
        while True:
            if interrupt.is_set() and asked_at is None:
                asked_at = time.monotonic()
                try:
                    self._send(("interrupt", run_id))
                except OSError:
                    pass
            if asked_at is not None and time.monotonic() - asked_at > self.interrupt_grace_s:
                where = f"node {track.node} ({track.class_type})" if track.node else "the prompt"
                reason = (f"{where} did not stop within {self.interrupt_grace_s:g} s of the interrupt, so the "
                          "worker process was ended and a new one started (models load again on first use); "
                          "the node should call ctx.check_interrupt() in its loops")
                self._restart(f"{where} ignored an interrupt")
                return self._interrupted(bus, run_id, track, reason)
            try:
                if not self._conn.poll(POLL_S):
                    continue
                message = self._conn.recv()
            except (EOFError, OSError):
                return self._lost(bus, run_id, track, interrupt, f"it exited with code {self._exitcode()}")
            if message[0] == "end":
                break
            item = message[2]
            if isinstance(item, RunSummary):
                summary = item
                continue
            track.observe(item)
            bus.emit(item)
        if summary is None:
            return self._lost(bus, run_id, track, interrupt, "its event stream ended without a result")
        manifest = summary.manifest
        return RunResult(run_id, summary.status, dict(summary.outputs), list(summary.executed), list(summary.cached),
                         summary.error, manifest_source=lambda: manifest)

    def _exitcode(self) -> Any:
        self._proc.join(1)
        return self._proc.exitcode

    def _lost(self, bus: EventBus, run_id: str, track: RunTrack, interrupt: InterruptFlag, how: str) -> RunResult:
        closed = self._closed
        self._restart(f"the worker process was lost: {how}")
        if closed or interrupt.is_set():
            return self._interrupted(bus, run_id, track, "the server stopped" if closed else
                                     f"the worker process ended while interrupting: {how}")
        where = f" while running node {track.node} ({track.class_type})" if track.node else ""
        return self._failed(bus, run_id, track, "WorkerProcessLost",
                            f"the worker process died{where}: {how}; a new one was started. A node may have "
                            "crashed the process or exhausted memory: check the server log, then queue it again")

    def _failed(self, bus: EventBus, run_id: str, track: RunTrack, kind: str, message: str) -> RunResult:
        error = RunFailed(run_id, track.node or "", track.class_type or "", kind, message,
                          executed=tuple(track.executed))
        bus.emit(error)
        return RunResult(run_id, "error", executed=list(track.executed), cached=list(track.cached), error=error,
                         reason=message)

    def _interrupted(self, bus: EventBus, run_id: str, track: RunTrack, reason: str | None) -> RunResult:
        bus.emit(RunInterrupted(run_id, track.node, track.class_type, tuple(track.executed)))
        return RunResult(run_id, "interrupted", executed=list(track.executed), cached=list(track.cached),
                         reason=reason)

    # ---- maintenance -----------------------------------------------------------------------------------------------

    def free(self, unload_models: bool = True) -> None:
        """Drop the worker's cached results and models (nothing to do while a fresh one starts)."""
        with self._run_lock:
            if self._closed or self.info is None:
                return
            try:
                self._send(("free", unload_models))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if self._conn.poll(POLL_S) and self._conn.recv()[0] == "freed":
                        return
                self._restart("it did not answer a free request within 60 s")
            except (EOFError, OSError) as exc:
                self._restart(f"it was lost while freeing memory ({exc})")

    def close(self) -> None:
        """End the worker process (a prompt still running in it ends interrupted); unusable afterwards."""
        self._closed = True
        proc = self._proc
        if proc is None:
            return
        try:
            self._send(("stop",))
        except OSError:
            pass
        proc.join(2)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        if self._run_lock.acquire(timeout=15):  # a running prompt sees the end first, then the pipe closes
            try:
                self._conn.close()
            finally:
                self._run_lock.release()
