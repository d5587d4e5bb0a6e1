"""WebSocket fan-out: one coalescing, byte-bounded send queue and sender task per socket.

A slow client never blocks anyone else and never makes the server drop what it must see:

- a client that keeps up gets every message; one that is behind (its socket is full, or more than
  ``COALESCE_AFTER_BYTES`` wait) gets superseded messages coalesced: a newer ``executing`` of a prompt replaces the
  pending one (and the pending preview), a newer ``progress`` of the same prompt and node replaces the pending one, a
  newer preview replaces the pending one; the newer message keeps its own place at the end of the queue, so a client
  reads everything in the order it was sent;
- droppable messages (progress, previews) are evicted oldest first when the queue holds more than its byte bound;
- every other message (``execution_start``, ``execution_cached``, ``executed``, ``execution_success``/``_error``/
  ``_interrupted``, ``executing`` with node null, ``status`` with the ``sid``) is kept, in order;
- a client is closed only when it has read nothing for ``stall_timeout`` seconds while messages wait, or when the
  messages it must still receive outgrow the byte bound (it has fallen that far behind).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from .. import jsonsafe

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Defaults of ``ServerSettings.ws_buffer_bytes`` and ``ws_stall_timeout``.
DEFAULT_BUFFER_BYTES = 32 * MB
DEFAULT_STALL_TIMEOUT = 60.0
#: Pending bytes from which superseded messages are coalesced even while the socket still takes data.
COALESCE_AFTER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outgoing:
    """One frame to send: text (JSON already encoded) or binary.

    ``key``: a pending message with the same key is superseded by this one (None: never coalesced).
    ``replaces``: further keys whose pending messages this one makes moot (``executing`` ends the previews of the
    node before). ``droppable``: may be evicted when the client's queue is over its byte bound. ``preview``: a live
    preview, sent only to connections that want previews (``Connection.previews``).
    """

    data: str | bytes
    droppable: bool = False
    key: Hashable | None = None
    replaces: tuple[Hashable, ...] = ()
    preview: bool = False
    size: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        data = self.data
        size = len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode("utf-8"))
        object.__setattr__(self, "size", size)

    @classmethod
    def json(cls, kind: str, data: dict[str, Any], droppable: bool = False, key: Hashable | None = None,
             replaces: tuple[Hashable, ...] = ()) -> Outgoing:
        """A ``{"type", "data"}`` message (standard JSON)."""
        return cls(jsonsafe.dumps({"type": kind, "data": data}), droppable, key, replaces)


@dataclass
class QueueStats:
    """What happened to the messages offered to one client."""

    offered: int = 0
    sent: int = 0
    coalesced: int = 0
    dropped: int = 0


class SendQueue:
    """Pending frames of one client: FIFO, coalescing by key, bounded in bytes (see the module docstring)."""

    def __init__(self, limit_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.stats = QueueStats()
        self.bytes = 0
        #: Set by the sender while it waits for the socket to drain (the client is behind).
        self.draining = False
        self._seq = 0
        self._items: OrderedDict[int, Outgoing] = OrderedDict()
        self._droppable: OrderedDict[int, None] = OrderedDict()
        self._by_key: dict[Hashable, int] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def messages(self) -> list[Outgoing]:
        """The pending frames, oldest first."""
        return list(self._items.values())

    @property
    def behind(self) -> bool:
        """Whether the client is behind: superseded messages are coalesced."""
        return self.draining or self.bytes >= COALESCE_AFTER_BYTES

    def put(self, message: Outgoing) -> bool:
        """Queue ``message``; False when the frames that must not be dropped exceed the byte bound."""
        self.stats.offered += 1
        if self.behind:
            for key in (message.key, *message.replaces):
                if key is not None and key in self._by_key:
                    self._remove(self._by_key[key])
                    self.stats.coalesced += 1
        seq = self._seq = self._seq + 1
        self._items[seq] = message
        self.bytes += message.size
        if message.key is not None:
            self._by_key[message.key] = seq
        if message.droppable:
            self._droppable[seq] = None
        while self.bytes > self.limit_bytes and self._droppable and len(self._items) > 1:
            self._remove(next(iter(self._droppable)))
            self.stats.dropped += 1
        self._ready.set()
        return self.bytes <= self.limit_bytes or len(self._items) == 1

    def get_nowait(self) -> Outgoing | None:
        """The oldest frame, or None when empty."""
        if not self._items:
            self._ready.clear()
            return None
        seq, message = self._items.popitem(last=False)
        self._forget(seq, message)
        return message

    async def get(self) -> Outgoing:
        """Wait for the oldest frame."""
        while True:
            message = self.get_nowait()
            if message is not None:
                return message
            await self._ready.wait()

    def _remove(self, seq: int) -> None:
        self._forget(seq, self._items.pop(seq))

    def _forget(self, seq: int, message: Outgoing) -> None:
        self.bytes -= message.size
        self._droppable.pop(seq, None)
        if message.key is not None and self._by_key.get(message.key) == seq:
            del self._by_key[message.key]


@dataclass(eq=False)
class Connection:
    """One open WebSocket, its pending frames and its sender."""

    sid: str
    ws: web.WebSocketResponse
    queue: SendQueue
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    #: The socket's transport, aborted when the client stops reading (a close frame would never get through).
    transport: asyncio.BaseTransport | None = None
    task: asyncio.Task | None = None
    closed_because: str | None = None
    #: Whether live previews go to this socket (the server's --preview-method, or the client asked for them).
    previews: bool = True

    @property
    def stats(self) -> QueueStats:
        """Offered, sent, coalesced and dropped message counts."""
        return self.queue.stats


class Broadcaster:
    """Delivers messages to one client id or to all; must be used on the event loop (see ``post``)."""

    def __init__(self, buffer: int | None = None) -> None:
        """``buffer`` is ignored (it counted messages); the bounds come with each socket (``attach``)."""
        self._clients: dict[str, set[Connection]] = {}

    @property
    def client_count(self) -> int:
        """Open sockets."""
        return sum(len(c) for c in self._clients.values())

    def connections(self, sid: str | None = None) -> list[Connection]:
        """The open sockets of client ``sid`` (all when None)."""
        if sid is None:
            return [c for cs in self._clients.values() for c in cs]
        return list(self._clients.get(sid, ()))

    def attach(self, sid: str, ws: web.WebSocketResponse, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
               stall_timeout: float = DEFAULT_STALL_TIMEOUT,
               transport: asyncio.BaseTransport | None = None, previews: bool = True) -> Connection:
        """Register a prepared socket under ``sid`` and start its sender (``previews``: send it live previews)."""
        conn = Connection(sid, ws, SendQueue(buffer_bytes), stall_timeout, transport, previews=previews)
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
        for conn in self.connections(sid):
            if message.preview and not conn.previews:
                continue
            if not conn.queue.put(message):
                mib = conn.queue.limit_bytes / MB
                self._drop_client(conn, f"more than {mib:g} MiB of messages it must receive are unsent (it reads "
                                        f"too slowly; raise ws_buffer_bytes to allow more)")

    def post(self, loop: asyncio.AbstractEventLoop, message: Outgoing, sid: str | None = None) -> None:
        """Thread-safe ``send`` from the worker thread."""
        try:
            loop.call_soon_threadsafe(self.send, message, sid)
        except RuntimeError:  # the loop closed during shutdown
            pass

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""
        for conn in self.connections():
            self.detach(conn)
            try:
                await asyncio.wait_for(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown"), 2.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                _abort(conn)

    def _drop_client(self, conn: Connection, reason: str) -> None:
        stats = conn.stats
        log.warning("closing WebSocket of client %s: %s (%d messages unsent; %d sent, %d coalesced, %d dropped)",
                    conn.sid, reason, len(conn.queue), stats.sent, stats.coalesced, stats.dropped)
        conn.closed_because = reason
        self.detach(conn)
        asyncio.ensure_future(_close_stalled(conn, reason))

    async def _sender(self, conn: Connection) -> None:
        queue, ws = conn.queue, conn.ws
        try:
            while True:
                message = await queue.get()
                # A send suspends only while the socket is full: the client is behind (``draining``), and it has
                # read nothing at all when that lasts the whole stall timeout.
                queue.draining = True
                try:
                    async with asyncio.timeout(conn.stall_timeout):
                        if isinstance(message.data, bytes):
                            await ws.send_bytes(message.data)
                        else:
                            await ws.send_str(message.data)
                except TimeoutError:
                    self._drop_client(conn, f"it has read nothing for {conn.stall_timeout:g} s (ws_stall_timeout)")
                    return
                finally:
                    queue.draining = False
                queue.stats.sent += 1
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("WebSocket sender for client %s failed", conn.sid)


def _abort(conn: Connection) -> None:
    if conn.transport is not None:
        conn.transport.abort()  # type: ignore[attr-defined]


async def _close_stalled(conn: Connection, reason: str) -> None:
    """Queue a close frame, then cut the connection: a client that reads nothing would never receive the frame."""
    try:
        await asyncio.wait_for(conn.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=reason[:120].encode(),
                                             drain=False), 1.0)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass
    finally:
        _abort(conn)
