"""The WebSocket: ``GET /ws?clientId=`` streams status and the client's prompt events."""

from __future__ import annotations

import logging
import uuid

from aiohttp import WSMsgType, web

from ..messages import executing, status_message
from ..state import state

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
#: Seconds between pings (at least ``ws_stall_timeout``).
HEARTBEAT_S = 30.0


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
                                 transport=request.transport)
    try:
        st.broadcaster.send(status_message(st.store.remaining(), sid), sid)
        running = st.worker.current(sid)
        if running is not None and running.client_id == sid and running.node is not None:
            st.broadcaster.send(executing(running.node, running.prompt_id), sid)  # a reconnect mid-prompt
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.debug("WebSocket of %s closed with %s", sid, ws.exception())
            # Client messages (e.g. feature_flags) need no answer: previews are sent in the plain format.
    finally:
        st.broadcaster.detach(conn)
    return ws
