"""HTTP helpers shared by the route modules: ComfyUI-shaped error answers and capped JSON bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from .. import jsonsafe
from .state import PoolBusyError, state

T = TypeVar("T")
#: Request bodies larger than this are parsed on the CPU pool instead of the event loop.
PARSE_OFF_LOOP_BYTES = 64 * 1024
#: Largest integer a query parameter may carry (SQLite's limit is 2**63 - 1).
MAX_QUERY_INT = 2**31 - 1


def error_body(kind: str, message: str, details: str = "") -> dict[str, Any]:
    """ComfyUI's error shape: ``{"error": {type, message, details, extra_info}, "node_errors": {}}``."""
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


def json_response(data: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
    """Every JSON answer the server writes goes through here: standard JSON only (non-finite numbers → null)."""
    return web.json_response(data, status=status, dumps=jsonsafe.dumps, **kwargs)


def json_bytes(data: Any, status: int = 200) -> web.Response:
    """A JSON answer from data serialised by the caller's thread (use inside ``ServerState.blocking``)."""
    return web.Response(body=jsonsafe.dumps(data).encode(), status=status, content_type="application/json")


def json_error(status: int, kind: str, message: str, details: str = "") -> web.Response:
    """An error answer with ComfyUI's shape."""
    return json_response(error_body(kind, message, details), status=status)


class HTTPError(Exception):
    """An error answer raised from handlers and helpers; the errors middleware turns it into JSON."""

    def __init__(self, status: int, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.details = status, kind, message, details

    def response(self) -> web.Response:
        """The JSON answer."""
        return json_error(self.status, self.kind, self.message, self.details)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing anything over ``limit`` bytes with 413."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPError(413, "body_too_large", f"the request body is {request.content_length} bytes; the limit is "
                        f"{limit} bytes")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise HTTPError(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")
    return bytes(buf)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The JSON object in the body (capped); 400 with a clear message when it is malformed or not an object."""
    body = await read_body(request, state(request).settings.max_json_bytes)
    if not body.strip():
        if allow_empty:
            return {}
        raise HTTPError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        data = await compute(request, jsonsafe.loads, body) if len(body) > PARSE_OFF_LOOP_BYTES \
            else jsonsafe.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, "invalid_json", f"the request body is not valid JSON: {exc}",
                        "send Content-Type: application/json with a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def query_int(request: web.Request, name: str, default: int | None = None, *, minimum: int = 0,
              maximum: int = MAX_QUERY_INT) -> int | None:
    """An integer query parameter within ``minimum..maximum``; 400 naming the bounds when it is not one."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if len(raw) <= 40 else None
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise HTTPError(400, "invalid_parameter", f"query parameter {name}={raw[:40]!r} is not an integer in "
                        f"{minimum}..{maximum}", f"send {name} as a whole number from {minimum} to {maximum}")
    return value


async def compute(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run CPU-heavy work on the server's bounded CPU pool; 503 when the pool and its waiting line are full."""
    try:
        return await state(request).compute(fn, *args, **kwargs)
    except PoolBusyError:
        raise HTTPError(503, "server_busy", "the server is busy validating other prompts",
                        "retry in a few seconds") from None


def client_gone(request: web.Request) -> Callable[[], bool]:
    """A callable (safe from any thread) telling whether the client of ``request`` has disconnected."""
    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()
    return gone
