"""A prompt is validated once, when it is queued: the run uses that validation (after a restart, it validates again)."""

from __future__ import annotations

import pytest
from server_helpers import chain, receive_until_done

from nodegraph.server.state import STATE

pytestmark = pytest.mark.asyncio


async def test_a_queued_prompt_is_validated_once(client, engine, monkeypatch):
    calls = []
    real = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    ws = await client.ws_connect("/ws?clientId=once")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": chain(6, 7), "client_id": "once"})
    assert resp.status == 200
    prompt_id = (await resp.json())["prompt_id"]
    await receive_until_done(ws, prompt_id)
    history = await (await client.get(f"/history/{prompt_id}")).json()
    assert history[prompt_id]["status"]["status_str"] == "success"
    assert history[prompt_id]["outputs"]["3"]["text"] == ["42"]
    assert len(calls) == 1  # POST /prompt validated it; the worker ran that validated prompt


async def test_a_prompt_not_validated_in_this_process_is_validated_before_it_runs(client, engine, monkeypatch):
    calls = []
    real = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda *a, **k: calls.append(a) or real(*a, **k))
    worker = client.server.app[STATE].worker
    monkeypatch.setattr(worker, "remember", lambda *a: None)  # as after a restart: nothing kept in memory
    ws = await client.ws_connect("/ws?clientId=again")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": chain(2, 5), "client_id": "again"})
    prompt_id = (await resp.json())["prompt_id"]
    await receive_until_done(ws, prompt_id)
    history = await (await client.get(f"/history/{prompt_id}")).json()
    assert history[prompt_id]["outputs"]["3"]["text"] == ["10"] and len(calls) == 2
