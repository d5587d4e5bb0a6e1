"""WebSocket flow control: big runs reach a real client whole (coalesced, never cut), a stalled client is let go.

Big graphs go through a real server on a loopback port and a real aiohttp WebSocket client; the send queue's rules
(coalescing, byte bound, terminal messages in order) are checked directly on ``SendQueue``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from nodegraph.server.app import STATE
from nodegraph.server.broadcast import COALESCE_AFTER_BYTES, Outgoing, SendQueue
from nodegraph.server.messages import executing, preview_frame, progress, status_message

PID = "p1"


# ---- the send queue ------------------------------------------------------------------------------------------------

def _terminal(kind: str, node: str | None = None) -> Outgoing:
    return Outgoing.json(kind, {"prompt_id": PID, "node": node})


def _drain(queue: SendQueue) -> list[Outgoing]:
    out = []
    while (m := queue.get_nowait()) is not None:
        out.append(m)
    return out


def _kinds(messages: list[Outgoing]) -> list[tuple[str, Any]]:
    out = []
    for m in messages:
        if isinstance(m.data, bytes):
            out.append(("preview", m.data[8:]))
        else:
            d = json.loads(m.data)["data"]
            kind = json.loads(m.data)["type"]
            out.append((kind, f"{d['node']}@{d['value']}" if kind == "progress" else d.get("node")))
    return out


def test_queue_keeps_everything_for_a_client_that_keeps_up():
    q = SendQueue(1 << 20)
    sent = [executing("1", PID), progress(1, 2, "1", PID), progress(2, 2, "1", PID), executing("2", PID),
            _terminal("executed", "2"), executing(None, PID)]
    for m in sent:
        assert q.put(m)
    assert _drain(q) == sent and q.stats.coalesced == 0 and q.bytes == 0


def test_queue_coalesces_superseded_messages_and_keeps_terminal_ones_in_order():
    q = SendQueue(1 << 20)
    q.draining = True  # the socket is full: the client is behind
    q.put(status_message(0, "me"))
    q.put(_terminal("execution_start"))
    q.put(_terminal("execution_cached"))
    for node in ("1", "2", "3"):
        q.put(executing(node, PID))
        for step in (1, 2, 3):
            q.put(progress(step, 3, node, PID))
            q.put(preview_frame("JPEG", f"{node}/{step}".encode()))
        q.put(_terminal("executed", node))
        q.put(status_message(1))
    q.put(_terminal("execution_success"))
    q.put(status_message(0))
    q.put(executing(None, PID))
    got = _kinds(_drain(q))
    assert got == [("status", None), ("execution_start", None), ("execution_cached", None),
                   ("progress", "1@3"), ("executed", "1"), ("progress", "2@3"), ("executed", "2"),
                   ("executing", "3"), ("progress", "3@3"), ("preview", b"3/3"), ("executed", "3"),
                   ("execution_success", None), ("status", None), ("executing", None)]
    # executing 1, 2 and the previews of nodes 1, 2 went with the next `executing`; progress 1..2 of each node went
    # with the next step; three statuses with the next status.
    assert q.stats.offered == 3 + 3 * 9 + 3 == len(got) + q.stats.coalesced
    assert q.stats.dropped == 0 and q.bytes == 0


def test_queue_keeps_the_latest_executing_of_each_prompt():
    q = SendQueue(1 << 20)
    q.draining = True
    for m in (executing("1", "a"), executing("1", "b"), executing("2", "a"), executing("2", "b")):
        q.put(m)
    assert [json.loads(m.data)["data"]["prompt_id"] for m in _drain(q)] == ["a", "b"] and q.stats.coalesced == 2


def test_queue_coalesces_once_the_backlog_exceeds_the_threshold_without_a_full_socket():
    q = SendQueue(1 << 30)
    filler = _terminal("executed", "x" * 1024)
    while q.bytes < COALESCE_AFTER_BYTES:
        q.put(filler)
    q.put(executing("1", PID))
    q.put(executing("2", PID))
    assert q.stats.coalesced == 1 and _kinds(q.messages()[-1:]) == [("executing", "2")]


def test_queue_byte_bound_evicts_droppable_messages_oldest_first_and_never_terminal_ones():
    limit = 4000
    q = SendQueue(limit)
    for i in range(50):  # terminal messages interleaved with progress of distinct nodes (nothing to coalesce)
        assert q.put(_terminal("executed", f"t{i}"))
        q.put(progress(1, 1, f"n{i}", PID))
        assert q.bytes <= limit
    got = _kinds(_drain(q))
    assert [n for k, n in got if k == "executed"] == [f"t{i}" for i in range(50)]
    kept = [n for k, n in got if k == "progress"]
    assert kept and len(kept) < 50 and q.stats.dropped == 50 - len(kept)
    assert kept == [f"n{i}@1" for i in range(50 - len(kept), 50)]  # the newest ones: evicted oldest first
    assert q.stats.offered == 100 == len(got) + q.stats.dropped


def test_queue_reports_overflow_of_messages_it_must_not_drop():
    q = SendQueue(1000)
    big = Outgoing("x" * 5000)
    assert q.put(big)  # one oversized message still goes (the queue was empty)
    assert not q.put(_terminal("execution_success"))  # behind by more than the bound with nothing droppable
    assert len(q) == 2 and q.messages()[0] is big and q.stats.dropped == 0


# ---- real server, real client ----------------------------------------------------------------------------------------

def chain_graph(n: int, preview_kib: int, seed: int, step_ms: int = 0) -> dict[str, Any]:
    """PrimitiveInt → (n - 2) WsFlowStep → ShowValue: n nodes in one line."""
    g: dict[str, Any] = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": seed}}}
    for i in range(2, n):
        g[str(i)] = {"class_type": "WsFlowStep", "inputs": {"value": [str(i - 1), 0], "steps": 2,
                                                            "step_ms": step_ms, "preview_kib": preview_kib}}
    g[str(n)] = {"class_type": "ShowValue", "inputs": {"value": [str(n - 1), 0]}}
    return g


def wide_graph(n: int, preview_kib: int, seed: int) -> dict[str, Any]:
    """PrimitiveInt feeding (n - 1) / 2 WsFlowStep, each shown by its own ShowValue: n nodes, two deep."""
    g: dict[str, Any] = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": seed}}}
    for i in range((n - 1) // 2):
        g[f"s{i}"] = {"class_type": "WsFlowStep", "inputs": {"value": ["1", 0], "steps": 2, "step_ms": 0,
                                                             "preview_kib": preview_kib}}
        g[f"v{i}"] = {"class_type": "ShowValue", "inputs": {"value": [f"s{i}", 0]}}
    return g


async def _connect(client, sid: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect(f"/ws?clientId={sid}", compress=0)
    hello = json.loads((await ws.receive(timeout=10)).data)
    assert hello["data"]["sid"] == sid
    return ws


async def _submit(client, prompt: dict[str, Any], sid: str) -> str:
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": sid})
    body = await resp.json()
    assert resp.status == 200, body
    return body["prompt_id"]


async def _read_run(ws: aiohttp.ClientWebSocketResponse, pid: str, timeout: float = 120.0) -> tuple[Counter, list]:
    """Read as fast as possible up to ``executing`` null of ``pid``: (count per type, the text messages)."""
    counts: Counter = Counter()
    texts: list[dict[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            counts["preview"] += 1
            continue
        assert msg.type == aiohttp.WSMsgType.TEXT, f"the WebSocket ended before the run did: {msg!r}"
        data = json.loads(msg.data)
        counts[data["type"]] += 1
        texts.append(data)
        if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == pid:
            return counts, texts


async def _wait_history(client, pid: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = await (await client.get(f"/history/{pid}")).json()
        if hist:
            return hist[pid]
        await asyncio.sleep(0.05)
    raise AssertionError(f"prompt {pid} did not finish within {timeout} s")


async def _run_big(client, sid: str, graph: dict[str, Any], pause: bool) -> tuple[Counter, list, Any, float]:
    """Run ``graph`` for client ``sid``; with ``pause`` the client reads nothing until the server is done."""
    ws = await _connect(client, sid)
    conn = client.server.app[STATE].broadcaster.connections(sid)[0]
    t0 = time.monotonic()
    pid = await _submit(client, graph, sid)
    if pause:
        entry = await _wait_history(client, pid)
        assert entry["status"]["status_str"] == "success"
    counts, texts = await _read_run(ws, pid)
    elapsed = time.monotonic() - t0
    counts["status"] += 1  # the greeting, read by _connect
    deadline = time.monotonic() + 5
    while (len(conn.queue) or conn.queue.draining) and time.monotonic() < deadline:  # the last send's drain
        await asyncio.sleep(0.01)
    assert conn.closed_because is None and not ws.closed
    await ws.close()
    return counts, texts, conn.stats, elapsed


def _check_run(counts: Counter, texts: list, stats: Any, outputs: int, nodes: int) -> None:
    types = [t["type"] for t in texts if t["type"] != "status"]
    assert types[:2] == ["execution_start", "execution_cached"] and types[-2:] == ["execution_success", "executing"]
    assert counts["execution_success"] == 1 and counts["executed"] == outputs  # outcomes and outputs all arrive
    assert counts["executing"] <= nodes + 1
    assert sum(counts.values()) == stats.sent  # what the server sent is what the client read
    assert stats.offered == stats.sent + stats.coalesced + stats.dropped


@pytest.mark.asyncio
@pytest.mark.slow
@pytest.mark.parametrize("pause", [False, True], ids=["reading", "paused"])
async def test_4000_node_chain_reaches_the_client_whole(make_client, engine, pause, capsys):
    client = await make_client(engine)
    n = 4000
    counts, texts, stats, elapsed = await _run_big(client, f"chain-{pause}", chain_graph(n, 16, 7 + pause), pause)
    _check_run(counts, texts, stats, outputs=1, nodes=n)
    shown = next(t for t in texts if t["type"] == "executed")
    assert shown["data"]["node"] == str(n) and shown["data"]["output"] == {"text": [str(7 + pause + n - 2)]}
    with capsys.disabled():
        print(f"\n4000-node chain ({'paused' if pause else 'reading'} client): {elapsed:.1f} s; offered "
              f"{stats.offered}, sent {stats.sent}, coalesced {stats.coalesced}, dropped {stats.dropped}; "
              f"received {dict(counts)}")
    if pause:  # the socket filled up: the per-node messages were coalesced
        assert stats.coalesced > 0 and counts["executing"] < n and counts["preview"] < n - 2


@pytest.mark.asyncio
@pytest.mark.slow
@pytest.mark.parametrize("pause", [False, True], ids=["reading", "paused"])
async def test_3000_node_wide_graph_reaches_the_client_whole(make_client, engine, pause, capsys):
    client = await make_client(engine)
    n = 3001
    counts, texts, stats, elapsed = await _run_big(client, f"wide-{pause}", wide_graph(n, 16, 11 + pause), pause)
    _check_run(counts, texts, stats, outputs=(n - 1) // 2, nodes=n)
    shown = sorted(t["data"]["node"] for t in texts if t["type"] == "executed")
    assert shown == sorted(f"v{i}" for i in range((n - 1) // 2))  # every output once
    with capsys.disabled():
        print(f"\n3000-node wide graph ({'paused' if pause else 'reading'} client): {elapsed:.1f} s; offered "
              f"{stats.offered}, sent {stats.sent}, coalesced {stats.coalesced}, dropped {stats.dropped}")
    if pause:
        assert stats.coalesced > 0 and counts["executing"] < n


@pytest.mark.asyncio
@pytest.mark.slow
async def test_a_client_that_reads_nothing_is_closed_after_the_stall_timeout_and_a_reader_is_not(
        make_client, engine, caplog):
    caplog.set_level(logging.WARNING, logger="nodegraph.server.broadcast")
    client = await make_client(engine, ws_stall_timeout=1.0)
    broadcaster = client.server.app[STATE].broadcaster
    stalled = await _connect(client, "stalled")
    reader = await _connect(client, "reader")
    stalled_conn = broadcaster.connections("stalled")[0]
    reader_conn = broadcaster.connections("reader")[0]

    # 400 MB of previews over 2 s for a client that reads nothing: its socket fills, and after 1 s it is let go.
    stalled_pid = await _submit(client, chain_graph(202, 1024, 1, step_ms=5), "stalled")
    # The same for a client that reads, over longer than the stall timeout (50 nodes x 2 steps x 20 ms).
    reader_pid = await _submit(client, chain_graph(52, 240, 2, step_ms=20), "reader")
    t0 = time.monotonic()
    counts, _ = await _read_run(reader, reader_pid, timeout=60)
    assert time.monotonic() - t0 > 1.0 and counts["execution_success"] == 1
    assert reader_conn.closed_because is None and broadcaster.connections("reader") == [reader_conn]

    deadline = time.monotonic() + 15
    while broadcaster.connections("stalled") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not broadcaster.connections("stalled"), "the client that reads nothing was never closed"
    assert "read nothing for 1 s" in (stalled_conn.closed_because or "")
    assert any("closing WebSocket of client stalled" in r.getMessage() for r in caplog.records)
    # Reading now, it gets what was in flight, then the end of the connection, never the end of its run.
    ended = False
    while not ended:
        msg = await stalled.receive(timeout=10)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            assert not (data["type"] == "executing" and data["data"]["node"] is None
                        and data["data"]["prompt_id"] == stalled_pid)
        ended = msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert (await _wait_history(client, stalled_pid))["status"]["status_str"] == "success"  # the run itself went on
    await stalled.close()
    await reader.close()
