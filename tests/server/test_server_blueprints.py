"""Subgraph blueprints through the server: ``/api/global_subgraphs`` in ComfyUI's shape, and ``subgraph/NAME``
nodes in prompts run over POST /prompt + WebSocket (the shipped one on the embedded model, a published one from
the editor's user folder)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from server_helpers import receive_until_done

pytestmark = pytest.mark.asyncio


def times_three() -> dict[str, Any]:
    """A blueprint as the editor's "Publish subgraph" saves it: x → IntMath(x * 3) → out."""
    sg = "cccccccc-0000-4000-8000-000000000003"
    sub = {"id": sg, "name": "times_three", "version": 1, "revision": 0,
           "nodes": [{"id": 1, "type": "IntMath", "mode": 0, "widgets_values": [0, 3, "multiply"],
                      "inputs": [{"name": "a", "type": "INT", "link": 1, "widget": {"name": "a"}}],
                      "outputs": [{"name": "INT", "type": "INT", "links": [2]}]}],
           "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
                     {"id": 2, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "INT"}],
           "inputs": [{"id": "i", "name": "x", "type": "INT", "linkIds": [1]}],
           "outputs": [{"id": "o", "name": "out", "type": "INT", "linkIds": [2]}]}
    return {"version": 0.4, "nodes": [{"id": 1, "type": sg, "mode": 0, "widgets_values": [4]}], "links": [],
            "definitions": {"subgraphs": [sub]}}


async def run_prompt(client: Any, prompt: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
    """POST /prompt, follow the WebSocket until ``executing`` null: (prompt id, messages, history entry)."""
    client_id = str(uuid.uuid4())
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
    body = await resp.json()
    assert resp.status == 200, body
    messages = await receive_until_done(ws, body["prompt_id"], timeout=120)
    await ws.close()
    history = await (await client.get(f"/history/{body['prompt_id']}")).json()
    return body["prompt_id"], messages, history[body["prompt_id"]]


async def test_global_subgraphs_in_comfyui_shape(client, engine):
    home = engine.config.home / "subgraphs"
    home.mkdir(parents=True, exist_ok=True)
    (home / "times_three.json").write_text(json.dumps(times_three()))
    listed = await (await client.get("/api/global_subgraphs")).json()
    by_name = {entry["name"]: (key, entry) for key, entry in listed.items()}
    key, entry = by_name["shapes_txt2img"]
    assert entry == {"source": "templates", "name": "shapes_txt2img", "info": {"node_pack": "nodegraph"}}
    assert by_name["times_three"][1]["source"] == "home"
    one = await (await client.get(f"/api/global_subgraphs/{key}")).json()
    assert {k: v for k, v in one.items() if k != "data"} == entry and isinstance(one["data"], str)
    data = json.loads(one["data"])  # what the editor loads as a blueprint: one instance of its subgraph
    subgraph = data["definitions"]["subgraphs"][0]
    assert [n["type"] for n in data["nodes"]] == [subgraph["id"]]
    assert [s["name"] for s in subgraph["inputs"]] == ["ckpt_name", "text", "seed"]
    assert [s["type"] for s in subgraph["outputs"]] == ["IMAGE"]
    for bad in ("nope", "..%2F..%2Fpyproject.toml", "%2Fetc%2Fpasswd", "a" * 300):
        resp = await client.get(f"/api/global_subgraphs/{bad}")
        assert resp.status == 404, bad
        assert "global subgraph" in (await resp.json())["error"]["message"]


async def test_shipped_blueprint_runs_over_prompt_and_websocket(client):
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
              "2": {"class_type": "subgraph/shapes_txt2img", "inputs": {"seed": ["1", 0], "text": "a blue square"}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bp"}}}
    _, messages, entry = await run_prompt(client, prompt)
    ran = [m["data"]["node"] for m in messages if isinstance(m, dict) and m["type"] == "executing"]
    assert {"2:3", "2:4", "2:8", "3"} <= set(ran)  # inner nodes under stable OUTER:INNER ids
    assert entry["status"]["status_str"] == "success"
    (image,) = entry["outputs"]["3"]["images"]
    resp = await client.get("/view", params={"filename": image["filename"], "type": "output"})
    assert resp.status == 200 and (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"
    assert entry["prompt"][2]["2:3"]["class_type"] == "KSampler"


async def test_published_user_blueprint_runs_headless(client):
    # The editor's "Publish subgraph" saves into the user's subgraphs/ folder through /userdata.
    resp = await client.post(f"/api/userdata/{quote('subgraphs/times_three.json', safe='')}",
                             data=json.dumps(times_three()))
    assert resp.status == 200, await resp.text()
    prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
              "2": {"class_type": "subgraph/times_three", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    _, _, entry = await run_prompt(client, prompt)
    assert entry["outputs"]["3"] == {"text": ["15"]}
    prompt["2"]["inputs"] = {}  # the blueprint's saved value for x (4)
    _, _, entry = await run_prompt(client, prompt)
    assert entry["outputs"]["3"] == {"text": ["12"]}


async def test_unknown_blueprint_is_a_400_naming_it(client, engine):
    resp = await client.post("/prompt", json={"prompt": {"5": {"class_type": "subgraph/ghost", "inputs": {}}}})
    body = await resp.json()
    assert resp.status == 400
    error = body["node_errors"]["5"]["errors"][0]
    assert error["type"] == "blueprint_not_found" and "'ghost'" in error["message"]
    assert str(engine.config.home / "subgraphs") in error["details"]
    assert (await client.get("/queue")).status == 200  # the server carries on
