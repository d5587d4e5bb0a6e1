"""HTTP helpers shared by the route modules: ComfyUI-shaped error answers and capped JSON bodies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import jsonsafe
from .state import state


def error_body(kind: str, message: str, details: str = "") -> dict[str, Any]:
    """ComfyUI's error shape: ``{"error": {type, message, details, extra_info}, "node_errors": {}}``."""
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


def json_response(data: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
    """Every JSON answer the server writes goes through here: standard JSON only (non-finite numbers → null)."""
    return web.json_response(data, status=status, dumps=jsonsafe.dumps, **kwargs)


def json_bytes(data: Any) -> web.Response:
    """A JSON answer from data serialised by the caller's thread (use inside ``ServerState.blocking``)."""
    return web.Response(body=jsonsafe.dumps(data).encode(), content_type="application/json")


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
        data = jsonsafe.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, "invalid_json", f"the request body is not valid JSON: {exc}",
                        "send Content-Type: application/json with a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPError(400, "invalid_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter, 400 when it is not one."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(400, "invalid_parameter", f"query parameter {name}={raw!r} is not an integer") from None
