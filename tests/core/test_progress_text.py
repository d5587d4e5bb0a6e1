"""A node's progress text (e.g. ``loss 0.0123``) reaches event listeners, the CLI bar and the WebSocket, whose
``progress`` message keeps ComfyUI's fields and shape."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from nodegraph.cli import ProgressPrinter
from nodegraph.events import EventBus, NodeProgress
from nodegraph.server.messages import RunMessages
from nodegraph.testing import build_engine, build_registry, load_plugin_file

PLUGIN = '''
from nodegraph import Int, Node, NodeOutput, hookimpl


class TalkativeSteps(Node):
    """Counts to ``steps``, reporting a fake loss as progress text."""

    OUTPUT_NODE = True
    INPUTS = {"steps": Int(3, min=1, max=100)}

    def execute(self, ctx, steps):
        for i in range(1, steps + 1):
            ctx.progress(i, steps, text=f"loss {1.0 / i:.4f}")
        ctx.progress(steps, steps)  # no text: the last text stays on the bar, no field on the WebSocket
        return NodeOutput((), {"text": [str(steps)]})


@hookimpl
def nodegraph_nodes():
    """The node of this test plugin."""
    return [TalkativeSteps]
'''

GRAPH = {"1": {"class_type": "TalkativeSteps", "inputs": {"steps": 4}}}
TEXTS = ["loss 1.0000", "loss 0.5000", "loss 0.3333", "loss 0.2500"]


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plug"
    folder.mkdir()
    (folder / "talkative.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def talkative_engine(nodegraph_config, plugin_dir):
    module = load_plugin_file(plugin_dir / "talkative.py")
    return build_engine(nodegraph_config, build_registry(module, builtins=()))


def test_progress_text_reaches_an_event_listener_and_the_cli_bar(talkative_engine):
    seen: list[NodeProgress] = []
    stream = io.StringIO()
    bus = EventBus([lambda e: seen.append(e) if isinstance(e, NodeProgress) else None, ProgressPrinter(stream)])
    result = talkative_engine.run(talkative_engine.prepare(GRAPH), bus=bus)
    assert result.status == "success", result
    assert [e.text for e in seen] == TEXTS + [None]
    assert [(e.value, e.max) for e in seen] == [(1, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    bar = stream.getvalue()
    assert "loss 0.2500" in bar and "4/4" in bar and "TalkativeSteps" in bar


def test_websocket_progress_keeps_comfyui_fields_and_adds_text_only_when_given():
    messages = RunMessages("p1")
    with_text = messages.convert(NodeProgress("r", "7", 2, 5, None, "loss 0.0123"))
    without = messages.convert(NodeProgress("r", "7", 3, 5))
    (m1,) = [m for m in with_text if not isinstance(m.data, bytes) and json.loads(m.data)["type"] == "progress"]
    (m2,) = [m for m in without if not isinstance(m.data, bytes) and json.loads(m.data)["type"] == "progress"]
    assert json.loads(m1.data) == {"type": "progress", "data": {"value": 2, "max": 5, "prompt_id": "p1", "node": "7",
                                                                "text": "loss 0.0123"}}
    assert json.loads(m2.data) == {"type": "progress", "data": {"value": 3, "max": 5, "prompt_id": "p1", "node": "7"}}


@pytest.mark.asyncio
async def test_a_real_websocket_client_reads_the_progress_text(talkative_engine, nodegraph_server):
    base = nodegraph_server(talkative_engine)
    progress: list[dict] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/ws?clientId=talk") as ws:
            await ws.receive(timeout=10)  # the status greeting
            resp = await session.post(f"{base}/prompt", json={"prompt": GRAPH, "client_id": "talk"})
            assert resp.status == 200, await resp.text()
            pid = (await resp.json())["prompt_id"]
            while True:
                msg = await ws.receive(timeout=60)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                data = json.loads(msg.data)
                if data["type"] == "progress":
                    progress.append(data["data"])
                if data["type"] == "executing" and data["data"]["node"] is None:
                    break
    assert progress, "no progress message arrived"
    for d in progress:  # ComfyUI's fields, plus ``text`` only where the node gave one
        assert {"value", "max", "prompt_id", "node"} <= set(d) <= {"value", "max", "prompt_id", "node", "text"}
        assert d["prompt_id"] == pid and d["node"] == "1" and isinstance(d["value"], int)
    assert {d["text"] for d in progress if "text" in d} <= set(TEXTS)
    assert any("text" in d for d in progress)


@pytest.mark.slow  # a subprocess importing the engine: ~3 s
def test_the_cli_shows_the_progress_text(tmp_path, plugin_dir):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(GRAPH))
    done = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(wf), "--home", str(tmp_path / "home"),
                           "--plugin-dir", str(plugin_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "loss 0.2500" in done.stderr and "1: 4" in done.stdout


@pytest.mark.slow  # trains a few steps on the tiny model (~3 s with the checkpoint built)
def test_train_lora_node_reports_its_loss_as_progress_text(tiny_checkpoint, tmp_path):
    import shutil

    from nodegraph.config import EngineConfig
    from nodegraph.testing_graphs import capture_engine, run_captured

    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    shutil.copy(tiny_checkpoint.single_file, config.model_dir("checkpoints") / "tiny-sd.safetensors")
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
        "data": {"class_type": "ShapeConceptDataset", "inputs": {"concept": "star", "count": 2, "prior_images": 0,
                                                                  "seed": 0, "size": 32}},
        "ds": {"class_type": "ImageDataset", "inputs": {"images": ["data", 0], "clip": ["ckpt", 1],
                                                         "captions": ["data", 1]}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["ds", 0], "vae": ["ckpt", 2]}},
        "train": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["ckpt", 0], "latents": ["enc", 0], "positive": ["ds", 1], "batch_size": 2,
            "grad_accumulation_steps": 1, "steps": 4, "learning_rate": 1e-2, "rank": 4, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": 0, "training_dtype": "fp32", "lora_dtype": "bf16",
            "algorithm": "LoRA", "gradient_checkpointing": False, "existing_lora": "[None]"}},
        "loss": {"class_type": "Capture", "inputs": {"value": ["train", 2]}},
    }
    seen: list[NodeProgress] = []
    bus = EventBus([lambda e: seen.append(e) if isinstance(e, NodeProgress) and e.node_id == "train" else None])
    result, captured = run_captured(capture_engine(config), graph, bus=bus)
    result.raise_for_status()
    losses = captured["loss"]["loss"]
    assert len(losses) == 4
    assert [e.text for e in seen if e.text] == [f"loss {loss:.4f}" for loss in losses]
