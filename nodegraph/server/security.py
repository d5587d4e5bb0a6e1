"""Middlewares: refuse cross-site and DNS-rebinding requests, require the auth token, and shape errors as JSON."""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

from aiohttp import web
from yarl import URL

from ..config import UnsafePathError
from .http import HTTPError, json_error
from .settings import is_loopback
from .state import state

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "nodegraph_token"


def _host_port(url: URL) -> tuple[str, int | None]:
    return (url.host or "").lower().strip("[]"), url.port


def _parse_host(scheme: str, host_header: str) -> tuple[str, int | None] | None:
    try:
        return _host_port(URL(f"{scheme}://{host_header}"))
    except ValueError:
        return None


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse browser requests from another site; without a token on loopback, also non-loopback Host names."""
    settings = state(request).settings
    host_header = request.headers.get("Host", "")
    parsed = _parse_host(request.scheme, host_header) if host_header else ("", None)
    if parsed is None:
        return json_error(400, "bad_host", f"Host header {host_header!r} is not a host name")
    host = parsed[0]
    if not settings.token and is_loopback(settings.listen) and host and not is_loopback(host):
        # A page on evil.example whose name resolves to 127.0.0.1 (DNS rebinding) passes the Origin check below;
        # with a token the page cannot authenticate, so reverse proxies may then pass their own Host.
        return json_error(403, "forbidden_host", f"Host {host_header!r} is not a loopback name",
                          "open the server as http://127.0.0.1:PORT or http://localhost:PORT, or set a token")
    origin = request.headers.get("Origin")
    if origin is not None and origin not in settings.allowed_origins:
        try:
            origin_url = URL(origin)
            same = origin_url.scheme in ("http", "https") and \
                _host_port(origin_url) == _parse_host(origin_url.scheme, host_header)
        except ValueError:
            same = False
        if not same:
            log.warning("refused cross-site request from Origin %r to Host %r", origin, host_header)
            return json_error(403, "forbidden_origin", f"cross-site request from {origin!r} refused",
                              "use the API from the same origin as the server, or from a non-browser client")
    return await handler(request)


def _supplied_token(request: web.Request) -> tuple[str | None, bool]:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    if "token" in request.query:
        return request.query["token"], True
    return request.cookies.get(TOKEN_COOKIE), False


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require the token (``Authorization: Bearer``, ``?token=`` or the cookie ``?token=`` sets) when one is set."""
    expected = state(request).settings.token
    if not expected:
        return await handler(request)
    supplied, from_query = _supplied_token(request)
    if supplied is None or not hmac.compare_digest(supplied.encode(), expected.encode()):
        response = json_error(401, "unauthorized", "a valid auth token is required",
                              "send 'Authorization: Bearer TOKEN', or add ?token=TOKEN to the URL in a browser")
        response.headers["WWW-Authenticate"] = 'Bearer realm="nodegraph"'
        return response
    response = await handler(request)
    if from_query and not response.prepared:
        # A browser that opened ?token= once keeps working for its images and scripts.
        response.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="Strict", path="/")
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTPError and unsafe paths into JSON answers; never send a traceback to the client."""
    try:
        response = await handler(request)
    except HTTPError as exc:
        return exc.response()
    except UnsafePathError as exc:  # a malformed name is 400 (InvalidPathError), an escape 403
        status = getattr(exc, "http_status", 403)
        return json_error(status, "invalid_path" if status == 400 else "forbidden_path", str(exc))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "server_error", "internal server error; the server log has the details")
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


MIDDLEWARES = (origin_middleware, auth_middleware, errors_middleware)
