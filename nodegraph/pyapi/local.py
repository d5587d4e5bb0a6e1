"""In-process runs: the process's default Engine, running API JSON with events, timings and progress bars."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from ..events import (
    Event,
    EventBus,
    NodeFinished,
    NodeProgress,
    NodeStarted,
    RunFailed,
    RunFinished,
    RunInterrupted,
)
from .result import Result

EventCallback = Callable[[Event], None]
_END = (RunFinished, RunFailed, RunInterrupted)


@functools.lru_cache(maxsize=4)
def _engine_for(home: str | None) -> Any:
    from ..config import EngineConfig
    from ..engine import Engine

    config = EngineConfig() if home is None else EngineConfig(home=Path(home))
    config.ensure_dirs()
    return Engine(config)


def default_engine(home: str | Path | None = None) -> Any:
    """The Engine ``Graph()``/``Workflow`` use when given none: one per home folder per process, so models and
    node results stay cached across runs (pass ``engine=`` to use your own)."""
    return _engine_for(None if home is None else str(Path(home).expanduser().resolve()))


def store_uploads(config: Any, uploads: Mapping[str, Any]) -> None:
    """Write the graph's local images into the input folder (content-addressed names: written once)."""
    if not uploads:
        return
    folder = Path(config.input_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, upload in uploads.items():
        path = folder / name
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(upload.data)
            tmp.replace(path)


class Timings:
    """Event subscriber timing each executed node (seconds from its start to its end)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        kind = type(event)
        if kind is NodeStarted:
            self._started[event.node_id] = time.perf_counter()  # type: ignore[attr-defined]
        elif kind is NodeFinished:
            start = self._started.pop(event.node_id, None)  # type: ignore[attr-defined]
            if start is not None:
                self.seconds[event.node_id] = time.perf_counter() - start  # type: ignore[attr-defined]


class ProgressBars:
    """Event subscriber drawing a tqdm bar per node that reports progress (``tqdm.auto``: a widget in Jupyter)."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self.kwargs = tqdm_kwargs
        self._bar: Any = None
        self._node = ""

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeStarted):
            self.close()
            self._node = f"{event.node_id} {event.class_type}"
        elif isinstance(event, NodeProgress):
            if self._bar is None:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=event.max, desc=self._node, leave=True, **self.kwargs)
            self._bar.total = event.max
            self._bar.n = event.value
            if event.text is not None:
                self._bar.set_postfix_str(event.text, refresh=False)
            self._bar.refresh()
        elif isinstance(event, (NodeFinished, *_END)):
            self.close()

    def close(self) -> None:
        """Close the current bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_bar() -> EventCallback:
    """A new ProgressBars subscriber."""
    return ProgressBars()


def run_api(engine: Any, api: dict[str, Any], *, graph: Any = None, on_event: EventCallback | None = None,
            progress: bool = False, timings: bool = True, interrupt: Any = None,
            extra_data: dict[str, Any] | None = None,
            raise_on_error: bool = True) -> Result:
    """Validate and run API JSON on ``engine``; returns a Result (raises on validation errors, and on node
    failures or interruption unless ``raise_on_error`` is False)."""
    subscribers: list[EventCallback] = []
    timer = Timings() if timings else None
    if timer is not None:
        subscribers.append(timer)
    if on_event is not None:
        subscribers.append(on_event)
    if progress:
        subscribers.append(progress_bar())
    prompt = engine.prepare(api)
    started = time.perf_counter()
    run = engine.run(prompt, bus=EventBus(subscribers), interrupt=interrupt, extra_data=extra_data)
    result = Result.local(engine, prompt, run, graph=graph, timings=timer.seconds if timer else {},
                          wall=time.perf_counter() - started)
    if raise_on_error:
        run.raise_for_status()
    return result



class EventStream:
    """``async for event in g.stream(): ...`` — the run's events as they happen (it runs on a thread); when the
    iteration ends, ``result`` holds the Result. ``cancel()`` interrupts the run."""

    def __init__(self, engine: Any, api: dict[str, Any], **kwargs: Any) -> None:
        from ..context import InterruptFlag

        self.engine, self.api, self.kwargs = engine, api, kwargs
        self.interrupt = InterruptFlag()
        self.result: Result | None = None
        self.error: BaseException | None = None

    def cancel(self) -> None:
        """Interrupt the run at the next node boundary or progress step."""
        self.interrupt.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        def forward(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            try:
                self.result = run_api(self.engine, self.api, on_event=forward, interrupt=self.interrupt,
                                      raise_on_error=False, **self.kwargs)
            except BaseException as exc:  # noqa: BLE001 (validation errors: raised to the iterating coroutine)
                self.error = exc
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        thread = threading.Thread(target=work, name="nodegraph-pyapi-run", daemon=True)
        thread.start()
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            if thread.is_alive():
                self.interrupt.set()
            await asyncio.to_thread(thread.join)
        if self.error is not None:
            raise self.error
