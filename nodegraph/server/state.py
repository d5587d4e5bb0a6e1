"""The services one server application holds, stored on the app under a typed key (no module-level state)."""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from ..engine import Engine
    from .broadcast import Broadcaster
    from .settings import ServerSettings
    from .store import QueueStore
    from .worker import Worker

T = TypeVar("T")


class PoolBusyError(Exception):
    """Every thread of a CpuPool is busy and its waiting line is full; the caller should answer 503."""


class CpuPool:
    """A small thread pool for CPU-heavy request work (parsing big bodies, validating prompts), apart from the
    threads that serve quick database and file calls, with a bounded number of jobs running or waiting."""

    def __init__(self, threads: int, waiting: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nodegraph-cpu")
        self.capacity = threads + waiting
        self._lock = threading.Lock()
        self._jobs = 0
        weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)

    @property
    def jobs(self) -> int:
        """Jobs running or waiting now."""
        return self._jobs

    def _done(self, _future: Any) -> None:
        with self._lock:
            self._jobs -= 1

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a pool thread; PoolBusyError when ``capacity`` jobs are already running or waiting.

        A job counts until its thread finishes it, even when the awaiting request is cancelled.
        """
        with self._lock:
            if self._jobs >= self.capacity:
                raise PoolBusyError(f"{self._jobs} jobs are running or waiting")
            self._jobs += 1
        try:
            future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        except RuntimeError:  # shut down
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop taking jobs; queued ones are dropped, running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class ServerState:
    """Engine, settings, queue store, worker and WebSocket broadcaster of one application."""

    engine: "Engine"
    settings: "ServerSettings"
    store: "QueueStore"
    worker: "Worker"
    broadcaster: "Broadcaster"
    #: The open lock file that keeps a second server off the same home folder.
    lock_handle: Any = None
    #: CPU-heavy request work (validation); sized by ``engine.config.limits``.
    cpu: CpuPool | None = None

    def __post_init__(self) -> None:
        if self.cpu is None:
            from ..limits import limits_of

            limits = limits_of(self.engine.config)
            self.cpu = CpuPool(limits.validation_threads, limits.validation_waiting)

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a quick blocking call (database, file system, PIL) in a thread so the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def compute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run CPU-heavy work (parsing, validation) on the bounded CPU pool; PoolBusyError when it is full."""
        assert self.cpu is not None
        return await self.cpu.run(fn, *args, **kwargs)


STATE: web.AppKey[ServerState] = web.AppKey("nodegraph_state", ServerState)


def state(request: web.Request) -> ServerState:
    """The ServerState of the application serving ``request``."""
    return request.config_dict[STATE]
