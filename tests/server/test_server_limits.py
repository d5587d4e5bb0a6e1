"""Hostile prompts against a real server: 400 (or 503) with a clear message, never 500, standard JSON out, and
validation on a bounded pool that leaves the routes the editor polls fast."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from server_helpers import chain

from nodegraph import Int, Link, Node, NodeOutput, Output, hookimpl
from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.limits import Limits
from nodegraph.registry import Registry

pytestmark = pytest.mark.asyncio
PLUGINS = Path(__file__).resolve().parent / "plugins"


class Raiser(Node):
    """validate_inputs raises: a plugin bug, which must come back as this node's error."""

    OUTPUT_NODE = True
    INPUTS = {"x": Int(1)}
    OUTPUTS = ()

    @classmethod
    def validate_inputs(cls, config, **constants):
        raise KeyError("plugin bug")

    def execute(self, ctx, x):
        return NodeOutput((), {})


class Gate(Node):
    """validate_inputs counts its calls and blocks on the first until the test opens the gate."""

    OUTPUT_NODE = True
    INPUTS = {"x": Int(1)}
    OUTPUTS = ()
    opened = threading.Event()
    entered = threading.Event()
    calls = 0

    @classmethod
    def validate_inputs(cls, config, **constants):
        Gate.calls += 1
        Gate.entered.set()
        Gate.opened.wait(20)
        return []

    def execute(self, ctx, x):
        return NodeOutput((), {})


class NanUI(Node):
    """An output node whose UI payload holds NaN and Infinity."""

    OUTPUT_NODE = True
    INPUTS = {"x": Int(1)}
    OUTPUTS = ()

    def execute(self, ctx, x):
        return NodeOutput((), {"value": [float("nan"), float("inf")]})


class Pass(Node):
    """Passes an INT through (for long unknown-free chains)."""

    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x):
        return (x,)


@hookimpl
def nodegraph_nodes():
    """The nodes of this test module."""
    return [Raiser, Gate, NanUI, Pass]


@pytest.fixture(scope="module")
def limits_registry() -> Registry:
    return Registry.load([PLUGINS], extra=[sys.modules[__name__]])


def make_engine(tmp_path: Path, registry: Registry, **limits) -> Engine:
    return Engine(EngineConfig(home=tmp_path / "home", plugin_dirs=[PLUGINS], limits=Limits(**limits)),
                  registry=registry)


def strict(text: str):
    """Parse as standard JSON only (NaN/Infinity refused)."""
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"non-standard {c}")))


async def post_raw(client, body: str):
    resp = await client.post("/prompt", data=body.encode(), headers={"Content-Type": "application/json"})
    return resp.status, strict(await resp.text())


async def alive(client) -> None:
    resp = await client.get("/prompt")
    assert resp.status == 200 and "exec_info" in await resp.json()


async def test_malformed_bodies_and_fields_answer_400(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry))
    good = json.dumps(chain())
    deep_input = json.dumps({"prompt": {**chain(), "2": {"class_type": "IntMath", "inputs": {
        "a": ["1", 0], "b": "DEEP", "operation": "add"}}}}).replace('"DEEP"', "[" * 900 + "]" * 900)
    cases = {
        "100,000 nested lists": ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid_json"),
        "900 nested lists as an input value": (deep_input, "invalid_json"),
        "missing execution target": (json.dumps({"prompt": chain(), "partial_execution_targets": ["99"]}),
                                     "invalid_target"),
        "UI format with int nodes": (json.dumps({"prompt": {"nodes": [1, 2, 3], "links": []}}), "invalid_prompt"),
        "UI format with bad links": (json.dumps({"prompt": {"nodes": [{"id": 1, "type": "ShowValue"}],
                                                            "links": [[1, "x"]]}}), "invalid_prompt"),
        "NaN number": ('{"prompt": %s, "number": NaN}' % good, "invalid_json"),
        "1e400 number": ('{"prompt": %s, "number": 1e400}' % good, "invalid_json"),
        "Infinity number": ('{"prompt": %s, "number": Infinity}' % good, "invalid_json"),
        "1e300 number": ('{"prompt": %s, "number": 1e300}' % good, "invalid_request"),
        "surrogate client_id": ('{"prompt": %s, "client_id": "\\ud800"}' % good, "invalid_json"),
        "surrogate prompt_id": ('{"prompt": %s, "prompt_id": "x\\udc00"}' % good, "invalid_json"),
        "NaN in extra_data": ('{"prompt": %s, "extra_data": {"a": [NaN]}}' % good, "invalid_json"),
        "object client_id": ('{"prompt": %s, "client_id": {"a": 1}}' % good, "invalid_request"),
    }
    for name, (body, kind) in cases.items():
        status, answer = await post_raw(client, body)
        assert (status, answer["error"]["type"]) == (400, kind), (name, answer)
        assert answer["error"]["message"], name
    await alive(client)


async def test_validate_inputs_that_raises_names_the_node(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry))
    status, answer = await post_raw(client, json.dumps({"prompt": {"7": {"class_type": "Raiser",
                                                                          "inputs": {"x": 1}}}}))
    assert status == 400 and list(answer["node_errors"]) == ["7"]
    err = answer["node_errors"]["7"]["errors"][0]
    assert err["type"] == "custom_validation_failed" and "Raiser.validate_inputs() raised KeyError" in err["message"]
    await alive(client)


async def test_history_stays_standard_json(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry))
    resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "NanUI", "inputs": {"x": 1}}},
                                              "extra_data": {"note": "ok"}})
    prompt_id = (await resp.json())["prompt_id"]
    for _ in range(200):
        history = strict(await (await client.get("/history")).text())
        if prompt_id in history:
            break
        await asyncio.sleep(0.02)
    assert history[prompt_id]["outputs"]["1"]["value"] == [None, None]
    strict(await (await client.get(f"/history/{prompt_id}")).text())
    strict(await (await client.get("/api/jobs")).text())


async def test_query_integers_are_bounded(client):
    for path, query in [("/history", "max_items=99999999999999999999"), ("/history", "offset=99999999999999999999"),
                        ("/history", "max_items=-5"), ("/history", "offset=-2"), ("/history", "max_items=1e3"),
                        ("/api/jobs", "limit=99999999999999999999"), ("/api/jobs", "offset=-1"),
                        ("/api/jobs", "offset=99999999999999999999")]:
        resp = await client.get(f"{path}?{query}")
        body = strict(await resp.text())
        assert resp.status == 400 and body["error"]["type"] == "invalid_parameter", (path, query, body)
        assert query.split("=")[0] in body["error"]["message"] and ".." in body["error"]["message"]
    assert (await client.get("/history?max_items=2&offset=-1")).status == 200
    assert (await client.get("/api/jobs?limit=5000")).status == 200  # clamped to the page cap, as before
    await alive(client)


async def test_node_string_and_pixel_caps_answer_400(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry, max_nodes=100, max_string_chars=1000))
    many = {str(i): {"class_type": "NoSuchNode", "inputs": {}} for i in range(101)}
    status, answer = await post_raw(client, json.dumps({"prompt": many}))
    assert status == 400 and answer["error"]["type"] == "too_many_nodes"
    assert "101 nodes" in answer["error"]["message"] and "limits.max_nodes" in answer["error"]["details"]

    status, answer = await post_raw(client, json.dumps({"prompt": {
        "1": {"class_type": "SlowSteps", "inputs": {"steps": 1, "step_ms": 0, "preview": False,
                                                    "tag": "t" * 1001}}}}))
    err = answer["node_errors"]["1"]["errors"][0]
    assert status == 400 and err["type"] == "string_too_long" and err["extra_info"]["input_name"] == "tag"

    for size, batch in ((16384, 1), (512, 4096)):
        status, answer = await post_raw(client, json.dumps({"prompt": {
            "e": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": batch,
                                                         "color": 0}},
            "p": {"class_type": "PreviewImage", "inputs": {"images": ["e", 0]}}}}))
        err = answer["node_errors"]["e"]["errors"][0]
        assert status == 400 and err["type"] == "image_too_large", answer
    await alive(client)


async def test_validation_pool_is_bounded_and_stops_for_departed_clients(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry, validation_threads=1, validation_waiting=0))
    Gate.calls = 0
    Gate.opened.clear()
    Gate.entered.clear()
    gates = {str(i): {"class_type": "Gate", "inputs": {"x": 1}} for i in range(1000)}
    first = asyncio.ensure_future(client.post("/prompt", json={"prompt": gates}))
    assert await asyncio.get_running_loop().run_in_executor(None, Gate.entered.wait, 10)
    resp = await client.post("/prompt", json={"prompt": chain()})  # the only thread is busy, nobody may wait
    body = strict(await resp.text())
    assert resp.status == 503 and body["error"]["type"] == "server_busy" and "retry" in body["error"]["details"]
    start = time.perf_counter()
    assert (await client.get("/history")).status == 200 and time.perf_counter() - start < 1.0
    first.cancel()  # the client goes away while its prompt is being validated
    await asyncio.sleep(0.2)
    Gate.opened.set()
    for _ in range(200):
        if (await client.post("/prompt", json={"prompt": chain()})).status == 200:
            break
        await asyncio.sleep(0.02)
    assert 1 <= Gate.calls <= 65  # stopped at the next check instead of validating all 1,000 nodes
    queue = await (await client.get("/queue")).json()
    assert all(len(entry[2]) != 1000 for entry in queue["queue_running"] + queue["queue_pending"])


@pytest.mark.slow
async def test_eight_big_posts_leave_history_fast(make_client, tmp_path, limits_registry):
    client = await make_client(make_engine(tmp_path, limits_registry))
    big = {str(i): {"class_type": f"Missing{i % 50}", "inputs": {"x": [str(i - 1), 0]} if i else {}}
           for i in range(10_000)}
    body = json.dumps({"prompt": big})

    async def post() -> int:
        resp = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
        await resp.read()
        return resp.status

    posts = [asyncio.ensure_future(post()) for _ in range(8)]
    latencies = []
    while not all(p.done() for p in posts):
        start = time.perf_counter()
        assert (await client.get("/history")).status == 200
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)
    statuses = [p.result() for p in posts]
    assert set(statuses) <= {400, 503} and 400 in statuses
    assert latencies and max(latencies) < 2.0, latencies
