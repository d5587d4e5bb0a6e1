"""The queue never stalls: BaseException from a node, a node that ignores interrupts, a worker process that dies."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from server_helpers import chain, receive_until_done, slow

from nodegraph.server.app import OWN_BACKEND

GRACE_S = 1.0


async def submit(client: Any, prompt: dict[str, Any], **extra: Any) -> str:
    resp = await client.post("/prompt", json={"prompt": prompt, **extra})
    body = await resp.json()
    assert resp.status == 200, body
    return body["prompt_id"]


async def finished(client: Any, prompt_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The history entry of ``prompt_id`` once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.get(f"/history/{prompt_id}")
        assert resp.status == 200
        body = await resp.json()
        if body:
            return body[prompt_id]
        await asyncio.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s; queue: "
                         f"{await (await client.get('/queue')).json()}")


def last_message(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind, data = entry["status"]["messages"][-1]
    return kind, data


@pytest.mark.asyncio
async def test_base_exceptions_from_a_node_are_node_failures_and_the_queue_goes_on(client):
    ids = {kind: await submit(client, {"1": {"class_type": "RaiseBase", "inputs": {"kind": kind, "tag": kind}}})
           for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit")}
    healthy = await submit(client, chain(2, 3))
    for kind, pid in ids.items():
        entry = await finished(client, pid)
        assert entry["status"]["status_str"] == "error"
        message_kind, data = last_message(entry)
        assert message_kind == "execution_error"
        assert (data["node_id"], data["node_type"], data["exception_type"]) == ("1", "RaiseBase", kind)
        assert f"{kind} from a node" in data["exception_message"]
    entry = await finished(client, healthy)
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["3"] == {"text": ["6"]}


def test_in_the_main_thread_only_keyboard_interrupt_propagates(engine):
    """`nodegraph run` executes on the main thread: Ctrl-C there still stops it; SystemExit is a node failure."""
    def prompt(kind: str) -> Any:
        return engine.prepare({"1": {"class_type": "RaiseBase", "inputs": {"kind": kind, "tag": "main"}}})

    result = engine.run(prompt("SystemExit"))
    assert result.status == "error" and result.error.exception_type == "SystemExit"
    with pytest.raises(KeyboardInterrupt):
        engine.run(prompt("KeyboardInterrupt"))


@pytest.mark.asyncio
async def test_nan_in_a_ui_payload_keeps_history_standard_json(client):
    pid = await submit(client, {"1": {"class_type": "NaNOutput", "inputs": {"tag": "nan"}}})
    await finished(client, pid)
    for path in ("/history", f"/history/{pid}"):
        text = await (await client.get(path)).text()
        body = json.loads(text, parse_constant=lambda name: pytest.fail(f"{path} answered {name}: not JSON"))
    assert body[pid]["outputs"]["1"]["values"] == [None, None, None, 1.5]


@pytest.mark.asyncio
@pytest.mark.slow
async def test_an_ignored_interrupt_ends_the_worker_process_and_the_queue_goes_on(make_client, engine):
    client = await make_client(engine, worker_process=True, interrupt_grace_s=GRACE_S)
    backend = client.server.app[OWN_BACKEND]
    ws = await client.ws_connect("/ws?clientId=r")
    await ws.receive_json(timeout=5)
    # A node that checks stops at once through the worker process, which stays (models stay loaded).
    polite = await submit(client, slow(steps=1000, step_ms=10, tag="polite"), client_id="r")
    while (msg := await ws.receive_json(timeout=60))["type"] != "progress":
        pass
    assert (await client.post("/interrupt", json={"prompt_id": polite})).status == 200
    kind, data = last_message(await finished(client, polite, timeout=10))
    assert kind == "execution_interrupted" and "reason" not in data and backend.restarts == 0

    stuck = await submit(client, {"1": {"class_type": "Stubborn", "inputs": {"seconds": 600, "tag": "a"}}},
                         client_id="r")
    behind = await submit(client, chain(4, 5), client_id="r")
    while True:  # the stubborn node is running in the worker process
        msg = await ws.receive_json(timeout=60)
        if msg["type"] == "executing" and msg["data"]["node"] == "1" and msg["data"]["prompt_id"] == stuck:
            break
    first_pid = backend.pid
    asked = time.monotonic()
    assert (await client.post("/interrupt", json={})).status == 200
    entry = await finished(client, stuck, timeout=GRACE_S + 10)
    took = time.monotonic() - asked
    assert GRACE_S <= took < GRACE_S + 10, took
    kind, data = last_message(entry)
    assert kind == "execution_interrupted" and entry["status"]["status_str"] == "error"
    assert data["node_id"] == "1" and data["node_type"] == "Stubborn"
    assert "did not stop within 1 s" in data["reason"] and "check_interrupt" in data["reason"]
    done = await finished(client, behind, timeout=60)  # on a fresh worker process
    assert done["status"]["status_str"] == "success" and done["outputs"]["3"] == {"text": ["20"]}
    assert backend.pid != first_pid and backend.restarts == 1
    await ws.close()


@pytest.mark.asyncio
@pytest.mark.slow
async def test_worker_process_matches_in_process_messages_frees_and_survives_a_crash(make_client, engine, tmp_path,
                                                                                     registry):
    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine

    inproc = await make_client(Engine(EngineConfig(home=tmp_path / "inproc", plugin_dirs=engine.config.plugin_dirs),
                                      registry=registry))
    isolated = await make_client(engine, worker_process=True, interrupt_grace_s=GRACE_S)
    prompt = slow(steps=3, step_ms=5, tag="same", preview=True, save=True)
    transcripts = []
    for client in (inproc, isolated):
        ws = await client.ws_connect("/ws?clientId=m")
        await ws.receive_json(timeout=5)
        pid = await submit(client, prompt, client_id="m")
        msgs = await receive_until_done(ws, pid, timeout=60)
        await ws.close()
        transcripts.append([(m["type"], {k: v for k, v in m["data"].items() if k not in ("prompt_id", "timestamp")})
                            if isinstance(m, dict) else ("binary", m[:8]) for m in msgs])
    assert transcripts[0] == transcripts[1]
    assert ("binary", transcripts[0][-1]) and sum(1 for t, _ in transcripts[0] if t == "progress") == 3
    assert (engine.config.folder_for("output") / "same.txt").read_text() == "same:3"

    async def cached_nodes(client: Any, prompt: dict[str, Any]) -> list[str]:
        ws = await client.ws_connect("/ws?clientId=c")
        await ws.receive_json(timeout=5)
        msgs = await receive_until_done(ws, await submit(client, prompt, client_id="c"), timeout=60)
        await ws.close()
        return next(m["data"]["nodes"] for m in msgs if isinstance(m, dict) and m["type"] == "execution_cached")

    assert sorted(await cached_nodes(isolated, chain(7, 8))) == []
    assert sorted(await cached_nodes(isolated, chain(7, 8))) == ["1", "2", "3"]
    assert (await isolated.post("/free", json={"unload_models": True})).status == 200
    assert await cached_nodes(isolated, chain(7, 8)) == []  # the worker process dropped its cache

    crash = await submit(isolated, {"1": {"class_type": "ExitProcess", "inputs": {"code": 3}}})
    after = await submit(isolated, chain(1, 1))
    kind, data = last_message(await finished(isolated, crash, timeout=60))
    assert kind == "execution_error" and data["exception_type"] == "WorkerProcessLost"
    assert data["node_id"] == "1" and "exited with code 3" in data["exception_message"]
    assert (await finished(isolated, after, timeout=60))["status"]["status_str"] == "success"
