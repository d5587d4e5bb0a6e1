"""SaveImageWebsocket: images reach the submitting client as binary WebSocket frames and no file is written.

The client follows ComfyUI's script example ``websockets_api_example_ws_images.py``: connect with a client id, queue
the prompt with that id, remember the node each ``executing`` names, keep ``frame[8:]`` of every binary frame that
arrives while the SaveImageWebsocket node runs, stop at ``executing`` with node null, and decode the PNGs.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from typing import Any

import aiohttp
import pytest
from PIL import Image

pytestmark = pytest.mark.asyncio

WS_NODE = "save_image_websocket_node"


def graph(color: int = 0x3366CC, width: int = 24, height: int = 16, batch: int = 2) -> dict[str, Any]:
    """EmptyImage → ImageInvert → SaveImageWebsocket (node id as in ComfyUI's example)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                         "color": color}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            WS_NODE: {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}}


async def get_images(client: Any, ws: aiohttp.ClientWebSocketResponse, prompt: dict[str, Any], client_id: str,
                     ) -> tuple[dict[str, list[bytes]], list[bytes], list[str]]:
    """The example's loop: (images by node, every binary frame, every text message type)."""
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id})
    body = await resp.json()
    assert resp.status == 200, body
    prompt_id = body["prompt_id"]
    output_images: dict[str, list[bytes]] = {}
    frames: list[bytes] = []
    kinds: list[str] = []
    current_node = ""
    while True:
        msg = await ws.receive(timeout=30)
        if msg.type == aiohttp.WSMsgType.TEXT:
            message = json.loads(msg.data)
            kinds.append(message["type"])
            if message["type"] == "executing" and message["data"]["prompt_id"] == prompt_id:
                if message["data"]["node"] is None:
                    return output_images, frames, kinds
                current_node = message["data"]["node"]
        elif msg.type == aiohttp.WSMsgType.BINARY:
            frames.append(msg.data)
            if current_node == WS_NODE:
                output_images.setdefault(current_node, []).append(msg.data[8:])
        else:
            raise AssertionError(f"the WebSocket ended: {msg!r}")


def files_under(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("preview_method", ["none", "auto"])
async def test_images_arrive_as_binary_frames_and_no_file_is_written(make_client, engine, preview_method):
    client = await make_client(engine, preview_method=preview_method)
    client_id = str(uuid.uuid4())
    ws = await client.ws_connect(f"/ws?clientId={client_id}")
    await ws.receive_json(timeout=5)
    before = files_under(engine.config.folder_for("output")), files_under(engine.config.folder_for("temp"))
    images, frames, kinds = await get_images(client, ws, graph(), client_id)
    assert len(images[WS_NODE]) == 2 and len(frames) == 2
    for frame in frames:
        assert struct.unpack(">II", frame[:8]) == (1, 2)  # image event, PNG
    for data in images[WS_NODE]:
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG" and img.size == (24, 16) and img.mode == "RGB"
        assert img.getpixel((5, 5)) == (255 - 0x33, 255 - 0x66, 255 - 0xCC)
    # Progress as ComfyUI's (one per image), no `executed` (the node has no UI output), and nothing on disk.
    assert kinds.count("progress") == 2 and "executed" not in kinds and "execution_success" in kinds
    assert (files_under(engine.config.folder_for("output")), files_under(engine.config.folder_for("temp"))) == before
    # The same prompt again sends the images again (the node is never served from the cache).
    again, _, kinds = await get_images(client, ws, graph(), client_id)
    assert again == images and "execution_cached" in kinds
    history = await (await client.get("/history")).json()
    assert all(entry["outputs"] == {} and entry["status"]["status_str"] == "success" for entry in history.values())
    await ws.close()


async def test_only_the_submitting_client_gets_the_images(make_client, engine):
    client = await make_client(engine)
    alice = await client.ws_connect("/ws?clientId=alice")
    bob = await client.ws_connect("/ws?clientId=bob")
    await alice.receive_json(timeout=5)
    await bob.receive_json(timeout=5)
    images, _, _ = await get_images(client, alice, graph(batch=1, color=0xFF0000), "alice")
    assert Image.open(io.BytesIO(images[WS_NODE][0])).getpixel((0, 0)) == (0, 255, 255)
    seen = []
    while True:
        try:
            seen.append(await bob.receive(timeout=0.3))
        except TimeoutError:
            break
    assert seen and all(m.type == aiohttp.WSMsgType.TEXT and json.loads(m.data)["type"] == "status" for m in seen)
    await alice.close()
    await bob.close()


async def test_catalogue_entry_matches_comfyui(client):
    info = await (await client.get("/object_info/SaveImageWebsocket")).json()
    entry = info["SaveImageWebsocket"]
    assert entry["input"]["required"]["images"][0] == "IMAGE"
    assert entry["output"] == [] and entry["output_node"] is True and entry["category"] == "api node/image"


@pytest.mark.slow
async def test_images_cross_the_worker_process(make_client, engine):
    client = await make_client(engine, worker_process=True)
    ws = await client.ws_connect("/ws?clientId=w")
    await ws.receive_json(timeout=5)
    images, _, _ = await get_images(client, ws, graph(batch=3), "w")
    assert [Image.open(io.BytesIO(d)).size for d in images[WS_NODE]] == [(24, 16)] * 3
    await ws.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _run_and_count_frames(session: aiohttp.ClientSession, base: str, client_id: str, flags: bool,
                                prompt: dict[str, Any]) -> tuple[int, int]:
    """(binary frames, progress messages) one client sees for its prompt."""
    async with session.ws_connect(f"{base}/ws?clientId={client_id}") as ws:
        await ws.receive_json(timeout=10)
        if flags:  # what the editor sends on connect
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            assert (await ws.receive_json(timeout=10))["type"] == "feature_flags"
        async with session.post(f"{base}/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
            assert resp.status == 200, await resp.text()
            prompt_id = (await resp.json())["prompt_id"]
        frames = progress = 0
        while True:
            msg = await ws.receive(timeout=60)
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames += 1
                continue
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            progress += data["type"] == "progress"
            if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
                return frames, progress


@pytest.mark.slow
@pytest.mark.parametrize("flag", [[], ["--preview-method", "auto"]])
async def test_nodegraph_serve_sends_previews_to_api_clients_only_when_asked(tmp_path, flag):
    """``nodegraph serve`` defaults to ComfyUI's --preview-method none: an API client sees progress but no preview
    frames (comfy-api-simplified took them for results), the editor (feature_flags) sees them; SaveImageWebsocket
    images always arrive."""
    import asyncio
    import os
    import subprocess
    import sys
    from pathlib import Path

    from server_helpers import PLUGINS, slow

    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NODEGRAPH_TOKEN": "", "NODEGRAPH_WARMUP": "0"}
    env.pop("NODEGRAPH_PREVIEW_METHOD", None)
    proc = subprocess.Popen([sys.executable, "-m", "nodegraph.cli", "serve", "--home", str(tmp_path / "home"),
                             "--port", str(port), "--plugin-dir", str(PLUGINS), *flag],
                            cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                try:
                    async with session.get(f"{base}/prompt") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                await asyncio.sleep(0.1)
            api = await _run_and_count_frames(session, base, "api", False, slow(steps=3, preview=True, tag="a"))
            editor = await _run_and_count_frames(session, base, "editor", True, slow(steps=3, preview=True, tag="e"))
            images = await _run_and_count_frames(session, base, "api", False, graph(batch=2))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert api == ((3, 3) if flag else (0, 3))
    assert editor == (3, 3)
    assert images == (2, 2)
