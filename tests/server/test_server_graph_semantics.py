"""Lists, lazy inputs and node expansion through the server (HTTP + WebSocket) and through ``nodegraph run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_helpers import PLUGINS, receive_until_done

from nodegraph.cli import main

REPO = Path(__file__).resolve().parents[2]
EXPANDING = {"1": {"class_type": "SemStart", "inputs": {"value": 10}},
             "2": {"class_type": "SemRepeat", "inputs": {"x": ["1", 0], "n": 5}},
             "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}


async def run_over_ws(client, prompt: dict, sid: str) -> tuple[str, list]:
    ws = await client.ws_connect(f"/ws?clientId={sid}")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": sid})
    assert resp.status == 200, await resp.text()
    prompt_id = (await resp.json())["prompt_id"]
    messages = await receive_until_done(ws, prompt_id, timeout=120)
    await ws.close()
    return prompt_id, [m for m in messages if isinstance(m, dict)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_seed_list_and_a_skipped_branch_through_the_server(client):
    prompt = json.loads((REPO / "workflows" / "seed_sweep_switch.json").read_text())
    prompt_id, messages = await run_over_ws(client, prompt, "lists")
    started = {m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"]["node"]}
    assert "3" in started and "14" not in started  # the sampler ran; the upscale branch the switch skips never did
    assert any(m["type"] == "execution_success" for m in messages)
    history = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert history["status"]["status_str"] == "success"
    assert len(history["outputs"]["9"]["images"]) == 1


@pytest.mark.asyncio
async def test_node_expansion_through_the_server_and_a_cached_rerun(client):
    prompt_id, messages = await run_over_ws(client, EXPANDING, "expand")
    history = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert history["status"]["status_str"] == "success" and history["outputs"]["3"]["text"] == ["15"]
    assert any(m["type"] == "execution_success" for m in messages)
    again_id, messages = await run_over_ws(client, EXPANDING, "expand")
    cached = [n for m in messages if m["type"] == "execution_cached" for n in m["data"]["nodes"]]
    assert {"1", "2"} <= set(cached)  # the expanding node and its input come from the cache
    again = (await (await client.get(f"/history/{again_id}")).json())[again_id]
    assert again["outputs"]["3"]["text"] == ["15"]


def test_node_expansion_through_nodegraph_run(tmp_path, capsys):
    path = tmp_path / "expand.json"
    path.write_text(json.dumps(EXPANDING))
    assert main(["run", str(path), "--home", str(tmp_path / "home"), "--plugin-dir", str(PLUGINS)]) == 0
    assert capsys.readouterr().out.strip() == "3: 15"
