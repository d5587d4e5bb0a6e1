"""The services one server application holds, stored on the app under a typed key (no module-level state)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from aiohttp import web

if TYPE_CHECKING:
    from ..engine import Engine
    from .broadcast import Broadcaster
    from .settings import ServerSettings
    from .store import QueueStore
    from .worker import Worker

T = TypeVar("T")


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

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (database, file system, PIL) in a thread so the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))


STATE: web.AppKey[ServerState] = web.AppKey("nodegraph_state", ServerState)


def state(request: web.Request) -> ServerState:
    """The ServerState of the application serving ``request``."""
    return request.config_dict[STATE]
