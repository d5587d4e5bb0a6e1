"""The queue worker: one thread that takes prompts from the store, runs them through the engine, and posts events."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.base import LocalBackend
from ..context import InterruptFlag
from ..events import Event, EventBus, NodeStarted, RunFailed, RunInterrupted
from ..validation import ValidatedPrompt, ValidationReport
from ..workflow import WorkflowFormatError
from .broadcast import Outgoing
from .messages import RunMessages, executing, status_message
from .store import QueueItem

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..engine import Engine
    from .broadcast import Broadcaster
    from .store import QueueStore

log = logging.getLogger(__name__)
#: Validated prompts kept in memory for their run (older ones are validated again when their turn comes).
PREPARED_KEPT = 256


@dataclass
class Running:
    """The prompt being executed now."""

    prompt_id: str
    client_id: str | None
    interrupt: InterruptFlag
    node: str | None = None


class Worker:
    """Runs queued prompts on dedicated threads (one per backend slot: one in-process, one per Ray worker); the
    event loop only ever waits on the queue."""

    def __init__(self, engine: "Engine", store: "QueueStore", broadcaster: "Broadcaster",
                 backend: "Backend | None" = None) -> None:
        self.engine = engine
        self.store = store
        self.broadcaster = broadcaster
        self.backend = backend if backend is not None else LocalBackend(engine)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}  # by prompt id, oldest first
        self._free: tuple[bool, bool] | None = None
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Prompts validated when they were queued, by id: run as they are instead of validating them again.
        self._prepared: OrderedDict[str, ValidatedPrompt] = OrderedDict()

    # ---- control (any thread) --------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker threads; events are posted to ``loop``."""
        self._loop = loop
        for i in range(max(1, self.backend.slots)):
            thread = threading.Thread(target=self._main, name=f"nodegraph-worker-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def signal_stop(self) -> None:
        """Ask the threads to end: interrupt the running prompts (they are re-queued) and take no new ones."""
        self._stopping.set()
        with self._lock:
            for running in self._running.values():
                running.interrupt.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """``signal_stop``, then wait for the threads to end."""
        self.signal_stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.alive:
            log.warning("the running node did not stop within %.0f s; it stays 'running' and is re-queued on "
                        "the next start", timeout)

    @property
    def alive(self) -> bool:
        """Whether a worker thread is running."""
        return any(t.is_alive() for t in self._threads)

    def remember(self, prompt_id: str, prompt: ValidatedPrompt) -> None:
        """Keep the prompt validated at submission for its run (bounded; after a restart prompts validate again)."""
        with self._lock:
            self._prepared[prompt_id] = prompt
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)

    def _prepared_for(self, item: QueueItem) -> ValidatedPrompt:
        with self._lock:
            prompt = self._prepared.pop(item.prompt_id, None)
        if prompt is not None and prompt.outputs == list(item.outputs_to_execute or prompt.outputs):
            return prompt
        return self.engine.prepare(item.prompt, item.outputs_to_execute or None)

    def notify(self) -> None:
        """Something was queued: wake up."""
        self._wake.set()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt ``prompt_id`` (every running one when None); whether one was interrupted."""
        with self._lock:
            targets = [r for r in self._running.values() if prompt_id is None or r.prompt_id == prompt_id]
            for running in targets:
                running.interrupt.set()
            return bool(targets)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free models and cached results before the next prompt."""
        with self._lock:
            old = self._free or (False, False)
            self._free = (old[0] or unload_models, old[1] or free_memory)
        self._wake.set()

    def current(self, client_id: str | None = None) -> Running | None:
        """A copy of what runs now (the oldest, or the oldest of ``client_id``'s), or None."""
        with self._lock:
            r = next((r for r in self._running.values() if client_id is None or r.client_id == client_id), None)
            return Running(r.prompt_id, r.client_id, r.interrupt, r.node) if r else None

    # ---- the thread ------------------------------------------------------------------------------------------------

    def _post(self, message: "Outgoing", sid: str | None) -> None:
        if self._loop is not None:
            self.broadcaster.post(self._loop, message, sid)

    def _post_status(self) -> None:
        self._post(status_message(self.store.remaining()), None)

    def _main(self) -> None:
        last_error = ""
        while not self._stopping.is_set():
            try:
                self._do_free()
                item = self.store.claim_next()
                last_error = ""
            except Exception as exc:  # logged once per distinct problem, not once a second
                if str(exc) != last_error:
                    log.exception("could not read the queue (%s); retrying every second, logged again only when "
                                  "the problem changes", self.store.path)
                    last_error = str(exc)
                item = None
                self._stopping.wait(1.0)
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if len(self._threads) > 1:
                self._wake.set()  # another thread may take the next prompt at once
            try:
                self._execute(item)
            except BaseException:  # SystemExit and co. from a backend: the prompt fails, the worker lives on
                log.exception("prompt %s: the worker failed outside the engine", item.prompt_id)
                self._record_crash(item)
            finally:
                with self._lock:
                    self._running.pop(item.prompt_id, None)

    def _do_free(self) -> None:
        with self._lock:
            request, self._free = self._free, None
        if request is not None and any(request):
            self.backend.free(unload_models=True)
            gc.collect()

    def _execute(self, item: QueueItem) -> None:
        flag = InterruptFlag()
        with self._lock:
            self._running[item.prompt_id] = Running(item.prompt_id, item.client_id, flag)
        self._post_status()
        messages = RunMessages(item.prompt_id)
        sid = item.client_id
        for m in messages.start():
            self._post(m, sid)
        try:
            prompt = self._prepared_for(item)
        except (ValidationReport, WorkflowFormatError, ValueError) as exc:
            self._finish(item, "error", {}, messages, self._invalid(messages, exc))
            return
        interrupted: list[RunInterrupted] = []

        def on_event(event: Event) -> None:
            if isinstance(event, NodeStarted):
                with self._lock:
                    if item.prompt_id in self._running:
                        self._running[item.prompt_id].node = event.node_id
            elif isinstance(event, RunInterrupted):
                interrupted.append(event)
            for m in messages.convert(event):
                self._post(m, sid)

        result = self.backend.run(prompt, bus=EventBus([on_event]), interrupt=flag, run_id=item.prompt_id,
                                  extra_data=item.extra_data)
        if result.status == "interrupted" and self._stopping.is_set():
            self.store.requeue(item.prompt_id)
            log.info("prompt %s re-queued by shutdown", item.prompt_id)
            return
        if result.status == "success":
            final = messages.success()
        elif result.status == "error" and result.error is not None:
            final = messages.failed(result.error)
        else:
            final = messages.interrupted(interrupted[-1] if interrupted else None)
            if result.reason:  # the node ignored the interrupt and its worker process was ended: say so
                kind, data = messages.history[-1]
                data["reason"] = result.reason
                final[-1] = Outgoing.json(kind, data)
        self._finish(item, result.status, result.outputs, messages, final)

    def _invalid(self, messages: RunMessages, exc: Exception) -> list["Outgoing"]:
        text = exc.render() if isinstance(exc, ValidationReport) else str(exc)
        return messages.failed(RunFailed(messages.prompt_id, "", "", "ValidationError",
                                         f"the prompt no longer validates: {text}"))

    def _finish(self, item: QueueItem, state: str, outputs: dict[str, Any], messages: RunMessages,
                final: list["Outgoing"]) -> None:
        # History first, then the messages: a client that sees `executing null` can read /history at once.
        # Order as ComfyUI: the outcome, the queue status, then `executing` with node null.
        self.store.finish(item.prompt_id, state, outputs, messages.history)
        with self._lock:
            self._running.pop(item.prompt_id, None)
        for m in final:
            self._post(m, item.client_id)
        self._post_status()
        self._post(executing(None, item.prompt_id), item.client_id)

    def _record_crash(self, item: QueueItem) -> None:
        try:
            messages = RunMessages(item.prompt_id)
            final = messages.failed(RunFailed(item.prompt_id, "", "", "ServerError",
                                              "the server failed while running this prompt; see its log"))
            self._finish(item, "error", {}, messages, final)
        except Exception:
            log.exception("could not record the failure of prompt %s", item.prompt_id)
