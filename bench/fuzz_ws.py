"""Fuzzing the WebSocket route: real handshakes with hostile client ids, then hostile frames from the client.

Each example opens ``/ws?clientId=…`` (or ``/api/ws``), reads the first message (it must be the ``status`` message,
in standard JSON), sends up to three frames (hostile JSON text, bytes, an over-long frame past the 1 MiB cap, or a
close with an odd code) and closes. Any 5xx on the handshake, a first message that is not standard JSON, or a server
that stops answering is a failure; the server closing the connection after an over-long frame is not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from hypothesis import strategies as st

from fuzz_sandbox import Answer, Req, strict_json
from fuzz_values import dump_json, encode, hostile_json, hostile_text

FRAME = st.one_of(hostile_json().map(lambda v: ("text", dump_json(v).decode("utf-8", "surrogatepass"))),
                  st.binary(max_size=64).map(lambda b: ("bytes", b)),
                  st.sampled_from([("text", '{"type": "feature_flags", "data": {}}'), ("bytes", b"\0" * ((1 << 20) + 1)),
                                   ("text", "x" * ((1 << 20) + 10)), ("ping", b""), ("close", b"")]))


def ws_request(path: str) -> st.SearchStrategy[Req]:
    """A WebSocket session on ``path``: a hostile client id and the frames to send after the first message."""
    client_id = st.one_of(st.just(""), st.text(max_size=12), hostile_text())
    return st.builds(lambda cid, frames: Req("GET", path, "clientId=" + encode(cid), frames=frames),
                     client_id, st.lists(FRAME, max_size=3))


async def _session(port: int, req: Req, frames: list[tuple[str, Any]], timeout: float) -> Answer:
    url = f"http://127.0.0.1:{port}{req.target()}"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        try:
            ws = await session.ws_connect(url, max_msg_size=0, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            return Answer(exc.status, {"content-type": ""}, exc.message.encode())
        first = await ws.receive(timeout=timeout)
        body = first.data.encode("utf-8", "surrogatepass") if first.type == aiohttp.WSMsgType.TEXT else b""
        try:  # the server may close on a frame past its cap: fine, as long as it answers the next client
            for kind, data in frames:
                if ws.closed:
                    break
                if kind == "text":
                    await ws.send_str(data)
                elif kind == "bytes":
                    await ws.send_bytes(data)
                elif kind == "ping":
                    await ws.ping()
                else:
                    await ws.close(code=4999)
            await ws.close()
        except (ConnectionError, aiohttp.ClientError):
            pass
        return Answer(101, {"content-type": "application/json" if body else "", "x-first": first.type.name}, body)


def ws_exchange(port: int, req: Req, timeout: float = 30.0) -> Answer:
    """Run one WebSocket session; its handshake status and first message (raises OSError when none comes)."""
    try:
        return asyncio.run(_session(port, req, req.frames or [], timeout))
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc


def ws_problem(answer: Answer) -> str | None:
    """Why a WebSocket session is a failure (None when fine)."""
    if answer.status >= 500:
        return f"HTTP {answer.status}"
    if answer.status == 101:
        try:
            first = strict_json(answer.body)
        except ValueError as exc:
            return f"first message is not standard JSON ({exc})"
        if not isinstance(first, dict) or first.get("type") != "status":
            return f"first message is not the status message: {answer.body[:80]!r}"
    return None
