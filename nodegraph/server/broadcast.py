"""WebSocket fan-out: one send queue and sender task per socket, so a slow client never blocks anyone else."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One frame to send: text (JSON already encoded) or binary; droppable frames go first under pressure."""

    data: str | bytes
    droppable: bool = False

    @classmethod
    def json(cls, kind: str, data: dict[str, Any], droppable: bool = False) -> "Outgoing":
        """A ``{"type", "data"}`` message."""
        return cls(json.dumps({"type": kind, "data": data}), droppable)


@dataclass(eq=False)
class Connection:
    """One open WebSocket and its pending frames."""

    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    dropped: int = 0


class Broadcaster:
    """Delivers messages to one client id or to all; must be used on the event loop (see ``post``)."""

    def __init__(self, buffer: int = 256) -> None:
        self.buffer = buffer
        self._clients: dict[str, set[Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client_count(self) -> int:
        """Open sockets."""
        return sum(len(c) for c in self._clients.values())

    def attach(self, sid: str, ws: web.WebSocketResponse) -> Connection:
        """Register a prepared socket under ``sid`` and start its sender."""
        self._loop = asyncio.get_running_loop()
        conn = Connection(sid, ws)
        conn.task = asyncio.create_task(self._sender(conn), name=f"ws-sender-{sid}")
        self._clients.setdefault(sid, set()).add(conn)
        return conn

    def detach(self, conn: Connection) -> None:
        """Forget a socket and stop its sender."""
        conns = self._clients.get(conn.sid)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._clients[conn.sid]
        if conn.task is not None and conn.task is not asyncio.current_task():
            conn.task.cancel()

    def send(self, message: Outgoing, sid: str | None = None) -> None:
        """Queue ``message`` for client ``sid`` (all clients when None)."""
        targets = [c for cs in self._clients.values() for c in cs] if sid is None else list(self._clients.get(sid, ()))
        for conn in targets:
            size = conn.queue.qsize()
            if message.droppable and size >= self.buffer:
                conn.dropped += 1
                continue
            if size >= self.buffer * 8:  # not reading at all: let it go rather than hold memory
                log.warning("closing WebSocket of client %s: %d messages unsent", conn.sid, size)
                self.detach(conn)
                asyncio.ensure_future(conn.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))
                continue
            conn.queue.put_nowait(message)

    def post(self, loop: asyncio.AbstractEventLoop, message: Outgoing, sid: str | None = None) -> None:
        """Thread-safe ``send`` from the worker thread."""
        try:
            loop.call_soon_threadsafe(self.send, message, sid)
        except RuntimeError:  # the loop closed during shutdown
            pass

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""
        conns = [c for cs in self._clients.values() for c in cs]
        for conn in conns:
            self.detach(conn)
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _sender(self, conn: Connection) -> None:
        try:
            while True:
                message = await conn.queue.get()
                if isinstance(message.data, bytes):
                    await conn.ws.send_bytes(message.data)
                else:
                    await conn.ws.send_str(message.data)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("WebSocket sender for client %s failed", conn.sid)
