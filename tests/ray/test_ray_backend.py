"""The Ray backend on a real local Ray cluster (2 CPUs, two CPU worker actors), started once for the session.

Worker 0 has one more plugin folder than worker 1 (catalogue routing); both share the head's home folder.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from ray_helpers import EXTRA, PLUGINS, checkpoint_graph, make_config, make_engine

from nodegraph.context import InterruptFlag
from nodegraph.events import EventBus, NodeProgress, NodeStarted, RunInterrupted
from nodegraph.server import ServerSettings, create_app

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="session")
def cluster():
    """One local Ray cluster for every test here (ray.init takes ~8-10 s on 2 cores)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(scope="session")
def head(home: Path):
    """The head's engine: validates with every test node (and HeadOnly, which no worker has)."""
    return make_engine(home, head_only=True)


@pytest.fixture(scope="session")
def backend(cluster, head, home: Path):
    from nodegraph.backends.ray_backend import RayBackend

    configs = [make_config(home, PLUGINS, EXTRA), make_config(home, PLUGINS)]
    b = RayBackend(head.registry, head.config, worker_configs=configs, cancel_grace_s=0.5, warm_up=False)
    try:
        yield b
    finally:
        b.close()


def wait_for_workers(backend, count: int = 2, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.worker_status()
        if len(status) == count:
            return status
        time.sleep(0.1)
    raise AssertionError(f"expected {count} live workers, have {backend.worker_status()}")


def shapes(events):
    return [(type(e).__name__, {k: v for k, v in vars(e).items() if k != "run_id"}) for e in events]


def test_events_and_result_match_the_in_process_engine(backend, head, tmp_path: Path):
    graph = checkpoint_graph("events", preview=True, steps=3)
    local_engine = make_engine(tmp_path)
    local: list = []
    expected = local_engine.run(local_engine.prepare(graph), bus=EventBus([local.append]), run_id="r")
    remote: list = []
    result = backend.run(head.prepare(graph), bus=EventBus([remote.append]), run_id="r")
    assert shapes(remote) == shapes(local)
    assert any(isinstance(e, NodeProgress) and e.preview and e.preview[1].startswith(b"\x89PNG") for e in remote)
    assert (result.status, result.outputs, result.executed) == (expected.status, expected.outputs,
                                                                 expected.executed)
    assert len(result.workers) == 1


def test_routing_prefers_the_worker_holding_the_checkpoint(backend, head):
    wait_for_workers(backend)
    first = {name: backend.run(head.prepare(checkpoint_graph(name, seed=1, load_ms=300))) for name in "xy"}
    worker = {name: r.workers[0] for name, r in first.items()}
    assert worker["x"] != worker["y"], "with no affinity the least recently used worker takes the prompt"
    for seed in (2, 3):
        for name in "yx":
            r = backend.run(head.prepare(checkpoint_graph(name, seed=seed, load_ms=300)))
            assert r.workers == [worker[name]] and r.cached == ["1"] and r.executed == ["2"]
            assert r.outputs == {"2": {"text": [f"model-{name}|{seed}"]}}


def test_a_node_missing_on_a_worker_never_goes_there(backend, head):
    wait_for_workers(backend)
    prompts = [head.prepare({"1": {"class_type": "OnlyOnSome", "inputs": {"value": i}}}) for i in range(4)]
    results: list = []
    threads = [threading.Thread(target=lambda p=p: results.append(backend.run(p))) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and all(r.status == "success" for r in results)
    assert {r.workers[0].split(".")[0] for r in results} == {"worker-0"}

    result = backend.run(head.prepare({"1": {"class_type": "HeadOnly", "inputs": {"value": 1}}}))
    assert result.status == "error" and result.error.exception_type == "NoWorkerAvailable"
    assert result.error.node_id == "1" and "HeadOnly is not installed" in result.error.exception_message


def test_interrupt_stops_the_run_and_keeps_the_model_loaded(backend, head):
    wait_for_workers(backend)
    flag, events = InterruptFlag(), []

    def on_event(event):
        events.append(event)
        if isinstance(event, NodeProgress):
            flag.set()

    start = time.monotonic()
    result = backend.run(head.prepare(checkpoint_graph("int", steps=1000, step_ms=10)), bus=EventBus([on_event]),
                         interrupt=flag)
    assert result.status == "interrupted" and time.monotonic() - start < 5
    assert isinstance(events[-1], RunInterrupted) and events[-1].node_id == "2" and events[-1].executed == ("1",)
    again = backend.run(head.prepare(checkpoint_graph("int", seed=7, steps=1)))
    assert again.status == "success" and again.workers == result.workers and again.cached == ["1"]


def test_interrupt_cancels_a_node_that_never_checks(backend, head):
    wait_for_workers(backend)
    flag, events = InterruptFlag(), []

    def on_event(event):
        events.append(event)
        if isinstance(event, NodeStarted):
            flag.set()

    start = time.monotonic()
    result = backend.run(head.prepare({"1": {"class_type": "Stubborn", "inputs": {"ms": 2500}}}),
                         bus=EventBus([on_event]), interrupt=flag)
    assert result.status == "interrupted" and time.monotonic() - start < 2.0  # cancelled after the 0.5 s grace
    assert isinstance(events[-1], RunInterrupted) and events[-1].node_id == "1"
    assert len(wait_for_workers(backend)) == 2  # the actor was not killed


def test_identical_png_to_the_in_process_engine_for_the_same_seed(backend, head, home: Path):
    from nodegraph._tiny import build_tiny_sd

    build_tiny_sd(home)
    graph = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
             "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
             "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
             "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "ks": {"class_type": "KSampler", "inputs": {
                 "model": ["ckpt", 0], "seed": 1234, "steps": 4, "cfg": 7.5, "sampler_name": "euler",
                 "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                 "denoise": 1.0}},
             "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
             "save": {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "same/seed"}}}
    remote = backend.run(head.prepare(graph))
    assert remote.status == "success", remote.error
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker (1 CPU): float sums on CPU depend on how work is split over threads
    try:
        local = head.run(head.prepare(graph))
    finally:
        torch.set_num_threads(threads)
    assert local.status == "success", local.error
    folder = head.config.outputs_dir / "same"
    names = [r.outputs["save"]["images"][0]["filename"] for r in (remote, local)]
    assert names[0] != names[1]
    assert (folder / names[0]).read_bytes() == (folder / names[1]).read_bytes()


async def run_over_websocket(client, prompt: dict, on_progress=None, timeout: float = 60.0) -> tuple[str, list]:
    """POST a prompt as client "c1" and collect its WebSocket messages up to ``executing`` with node null."""
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json(timeout=5)
    body = await (await client.post("/prompt", json={"prompt": prompt, "client_id": "c1"})).json()
    prompt_id, out = body["prompt_id"], []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            out.append(msg.data)
            continue
        data = json.loads(msg.data)
        out.append(data)
        if data["type"] == "progress" and on_progress is not None:
            on_progress(data)
            on_progress = None
        if data["type"] == "executing" and data["data"]["node"] is None:
            await ws.close()
            return prompt_id, out


def normalized(messages: list, prompt_id: str) -> list:
    out = []
    for m in messages:
        if isinstance(m, dict):
            data = {k: ("P" if v == prompt_id else v) for k, v in m["data"].items() if k != "timestamp"}
            m = {"type": m["type"], "data": data}
        out.append(m)
    return out


@pytest.mark.asyncio
async def test_websocket_messages_match_and_a_killed_workers_prompt_completes(
        backend, head, tmp_path: Path, aiohttp_server, aiohttp_client):
    graph = checkpoint_graph("ws", preview=True, steps=3)
    local = await aiohttp_client(await aiohttp_server(create_app(make_engine(tmp_path), ServerSettings())))
    local_id, local_msgs = await run_over_websocket(local, graph)
    client = await aiohttp_client(await aiohttp_server(create_app(head, ServerSettings(), backend)))
    ray_id, ray_msgs = await run_over_websocket(client, graph)
    assert normalized(ray_msgs, ray_id) == normalized(local_msgs, local_id)

    killed: list[str] = []

    def kill_the_busy_worker(_progress):
        busy = [w["name"] for w in backend.worker_status() if w["busy"]]
        killed.extend(busy)
        backend.ray.kill(backend.actor(busy[0]))

    prompt_id, msgs = await run_over_websocket(client, checkpoint_graph("kill", steps=40, step_ms=25),
                                               on_progress=kill_the_busy_worker)
    entry = (await (await client.get(f"/history/{prompt_id}")).json())[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["outputs"] == {"2": {"text": ["model-kill|1"]}}
    retried = [data for kind, data in entry["status"]["messages"] if kind == "execution_retried"]
    assert len(killed) == 1 and len(retried) == 1 and retried[0]["worker"] == killed[0]
    assert "ActorDiedError" in retried[0]["reason"] and retried[0]["attempt"] == 1
    kinds = [m["type"] for m in msgs if isinstance(m, dict) and m["type"] != "status"]
    assert kinds[-2:] == ["execution_success", "executing"] and "execution_retried" in kinds
    await asyncio.get_running_loop().run_in_executor(None, wait_for_workers, backend)
    assert killed[0] not in [w["name"] for w in backend.worker_status()]  # a replacement took its place


def test_outputs_come_back_as_bytes_without_a_shared_disk(cluster, head, tmp_path: Path):
    from nodegraph.backends.ray_backend import RayBackend
    from nodegraph.events import NodeFinished

    elsewhere = make_config(tmp_path / "worker-machine", PLUGINS)  # the worker's own disk
    head_config = make_config(tmp_path / "head-machine", PLUGINS, EXTRA)
    (head_config.outputs_dir / "shipped.txt").write_text("an older file of the same name")
    backend = RayBackend(head.registry, head_config, worker_configs=[elsewhere], cpus_per_worker=0,
                         shared_storage=False, warm_up=False)
    try:
        events: list = []
        result = backend.run(head.prepare(checkpoint_graph("ship", tag="shipped", save=True)),
                             bus=EventBus([events.append]))
    finally:
        backend.close()
    assert result.status == "success"
    entry = {"filename": "shipped-1.txt", "subfolder": "", "type": "output"}
    assert result.outputs["2"]["files"] == [entry]
    assert [e.ui["files"] for e in events if isinstance(e, NodeFinished) and e.node_id == "2"] == [[entry]]
    assert (head_config.outputs_dir / "shipped-1.txt").read_text() == "shipped:1"
    assert (head_config.outputs_dir / "shipped.txt").read_text() == "an older file of the same name"
    assert (elsewhere.outputs_dir / "shipped.txt").read_text() == "shipped:1"


def test_cli_run_with_the_ray_backend(cluster, home: Path, tmp_path: Path, monkeypatch, capsys):
    from nodegraph.cli import main

    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(checkpoint_graph("cli", seed=5)))
    monkeypatch.setenv("NODEGRAPH_RAY_WORKERS", "1")
    monkeypatch.setenv("NODEGRAPH_RAY_CPUS_PER_WORKER", "0")  # beside the session's workers, which hold both CPUs
    code = main(["run", str(workflow), "--backend", "ray", "--home", str(tmp_path / "home"),
                 "--plugin-dir", str(PLUGINS)])
    assert code == 0 and "2: model-cli|5" in capsys.readouterr().out
    assert cluster.is_initialized()  # the CLI's backend did not shut down a cluster it did not start
