"""The WebSocket: ``GET /ws?clientId=`` streams status and the client's prompt events."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from ... import jsonsafe
from ..broadcast import Outgoing
from ..messages import executing, status_message
from ..settings import ServerSettings
from ..state import state

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
#: Seconds between pings (at least ``ws_stall_timeout``).
HEARTBEAT_S = 30.0


def client_flags(text: str) -> dict[str, Any] | None:
    """The data of a client's ``feature_flags`` message, else None. The editor announces
    ``supports_preview_metadata``, which asks for live previews (API clients send none, and get no previews unless
    --preview-method says so)."""
    try:
        message = jsonsafe.loads(text)
    except ValueError:
        return None
    data = message.get("data") if isinstance(message, dict) and message.get("type") == "feature_flags" else None
    return data if isinstance(data, dict) else None


def server_flags(settings: ServerSettings) -> dict[str, Any]:
    """The server's feature flags (also ``GET /features``)."""
    return {"supports_preview_metadata": False, "max_upload_size": settings.max_upload_bytes}


@routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Send ``status`` (with the ``sid``) on connect, then every message for this client id until it closes."""
    st = state(request)
    stall = st.settings.ws_stall_timeout
    # Pings find dead peers; a client that answers none is closed after 1.5 heartbeats, never before the stall timeout.
    ws = web.WebSocketResponse(heartbeat=max(HEARTBEAT_S, stall), max_msg_size=1 << 20)
    await ws.prepare(request)
    sid = request.query.get("clientId") or uuid.uuid4().hex
    conn = st.broadcaster.attach(sid, ws, buffer_bytes=st.settings.ws_buffer_bytes, stall_timeout=stall,
                                 transport=request.transport, previews=st.settings.preview_method != "none")
    try:
        st.broadcaster.send(status_message(st.store.remaining(), sid), sid)
        running = st.worker.current(sid)
        if running is not None and running.client_id == sid and running.node is not None:
            st.broadcaster.send(executing(running.node, running.prompt_id), sid)  # a reconnect mid-prompt
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.debug("WebSocket of %s closed with %s", sid, ws.exception())
            elif msg.type == WSMsgType.TEXT and (flags := client_flags(msg.data)) is not None:
                # As ComfyUI: the server's flags answer the client's (previews stay in the plain format, type 1).
                conn.previews = conn.previews or flags.get("supports_preview_metadata") is True
                st.broadcaster.send(Outgoing.json("feature_flags", server_flags(st.settings)), sid)
    finally:
        st.broadcaster.detach(conn)
    return ws
