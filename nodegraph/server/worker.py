"""The queue worker: one thread that takes prompts from the store, runs them through the engine, and posts events."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..context import InterruptFlag
from ..events import Event, EventBus, NodeStarted, RunFailed, RunInterrupted
from ..validation import ValidationReport
from ..workflow import WorkflowFormatError
from .messages import RunMessages, executing, status_message
from .store import QueueItem

if TYPE_CHECKING:
    from ..engine import Engine
    from .broadcast import Broadcaster, Outgoing
    from .store import QueueStore

log = logging.getLogger(__name__)


@dataclass
class Running:
    """The prompt being executed now."""

    prompt_id: str
    client_id: str | None
    interrupt: InterruptFlag
    node: str | None = None


class Worker:
    """Runs queued prompts one at a time on a dedicated thread; the event loop only ever waits on the queue."""

    def __init__(self, engine: "Engine", store: "QueueStore", broadcaster: "Broadcaster") -> None:
        self.engine = engine
        self.store = store
        self.broadcaster = broadcaster
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: Running | None = None
        self._free: tuple[bool, bool] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- control (any thread) --------------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker thread; events are posted to ``loop``."""
        self._loop = loop
        self._thread = threading.Thread(target=self._main, name="nodegraph-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the running prompt (it is re-queued) and wait for the thread to end."""
        self._stopping.set()
        with self._lock:
            if self._running is not None:
                self._running.interrupt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the running node did not stop within %.0f s; it stays 'running' and is re-queued on "
                            "the next start", timeout)

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def notify(self) -> None:
        """Something was queued: wake up."""
        self._wake.set()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is ``prompt_id`` when given); whether one was interrupted."""
        with self._lock:
            running = self._running
            if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
                return False
            running.interrupt.set()
            return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Free models and cached results before the next prompt."""
        with self._lock:
            old = self._free or (False, False)
            self._free = (old[0] or unload_models, old[1] or free_memory)
        self._wake.set()

    def current(self) -> Running | None:
        """A copy of what runs now, or None."""
        with self._lock:
            r = self._running
            return Running(r.prompt_id, r.client_id, r.interrupt, r.node) if r else None

    # ---- the thread ------------------------------------------------------------------------------------------------

    def _post(self, message: "Outgoing", sid: str | None) -> None:
        if self._loop is not None:
            self.broadcaster.post(self._loop, message, sid)

    def _post_status(self) -> None:
        self._post(status_message(self.store.remaining()), None)

    def _main(self) -> None:
        while not self._stopping.is_set():
            self._do_free()
            try:
                item = self.store.claim_next()
            except Exception:
                log.exception("could not read the queue")
                item = None
                self._stopping.wait(1.0)
            if item is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._execute(item)
            except Exception:
                log.exception("prompt %s: the worker failed outside the engine", item.prompt_id)
                self._record_crash(item)
            finally:
                with self._lock:
                    self._running = None

    def _do_free(self) -> None:
        with self._lock:
            request, self._free = self._free, None
        if request is not None and any(request):
            self.engine.free(unload_models=True)
            gc.collect()

    def _execute(self, item: QueueItem) -> None:
        flag = InterruptFlag()
        with self._lock:
            self._running = Running(item.prompt_id, item.client_id, flag)
        self._post_status()
        messages = RunMessages(item.prompt_id)
        sid = item.client_id
        for m in messages.start():
            self._post(m, sid)
        try:
            prompt = self.engine.prepare(item.prompt, item.outputs_to_execute or None)
        except (ValidationReport, WorkflowFormatError, ValueError) as exc:
            self._finish(item, "error", {}, messages, self._invalid(messages, exc))
            return
        interrupted: list[RunInterrupted] = []

        def on_event(event: Event) -> None:
            if isinstance(event, NodeStarted):
                with self._lock:
                    if self._running is not None:
                        self._running.node = event.node_id
            elif isinstance(event, RunInterrupted):
                interrupted.append(event)
            for m in messages.convert(event):
                self._post(m, sid)

        result = self.engine.run(prompt, bus=EventBus([on_event]), interrupt=flag, run_id=item.prompt_id,
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
            self._running = None
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
