"""The ComfyUI API against a real server on a loopback port: round trips over HTTP and the WebSocket."""

from __future__ import annotations

import asyncio
import io
import struct

import pytest
from PIL import Image
from server_helpers import chain, receive_until_done, slow

pytestmark = pytest.mark.asyncio


def kinds(messages):
    return [m["type"] if isinstance(m, dict) else "binary" for m in messages]


async def submit(client, prompt, **extra):
    resp = await client.post("/prompt", json={"prompt": prompt, **extra})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["node_errors"] == {} and isinstance(body["number"], int)
    return body["prompt_id"]


async def test_round_trip_message_sequence_history_and_view(client):
    ws = await client.ws_connect("/ws?clientId=alice")
    hello = await ws.receive_json(timeout=5)
    assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "alice"}}

    prompt = {**chain(6, 7), "10": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4,
                                                                         "batch_size": 1, "color": 0x00FF00}},
              "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "rt/test"}}}
    pid = await submit(client, prompt, client_id="alice", extra_data={"extra_pnginfo": {"workflow": {"w": 1}}})
    msgs = await receive_until_done(ws, pid)
    types = [t for t in kinds(msgs) if t != "status"]
    assert types[:2] == ["execution_start", "execution_cached"]
    assert types[-2:] == ["execution_success", "executing"]
    executing = [m["data"]["node"] for m in msgs if m["type"] == "executing"]
    assert set(executing[:-1]) == {"1", "2", "3", "10", "11"} and executing[-1] is None
    assert executing.index("1") < executing.index("2") < executing.index("3")
    executed = {m["data"]["node"]: m["data"] for m in msgs if m["type"] == "executed"}
    assert executed["3"]["output"] == {"text": ["42"]} and executed["3"]["prompt_id"] == pid
    image = executed["11"]["output"]["images"][0]
    assert image["subfolder"] == "rt" and image["type"] == "output" and image["filename"].endswith(".png")
    for m in msgs:
        if m["type"] != "status":
            assert m["data"]["prompt_id"] == pid
    statuses = [m for m in msgs if m["type"] == "status"]
    assert statuses and statuses[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0

    hist = await (await client.get(f"/history/{pid}")).json()
    entry = hist[pid]
    assert entry["prompt"][0] == 0 and entry["prompt"][1] == pid and entry["prompt"][2]["11"]["class_type"] == "SaveImage"
    assert entry["prompt"][3]["client_id"] == "alice" and sorted(entry["prompt"][4]) == ["11", "3"]
    assert entry["outputs"]["3"] == {"text": ["42"]} and entry["outputs"]["11"]["images"] == [image]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                          "execution_success"]
    assert (await (await client.get("/api/history")).json()).keys() == {pid}

    resp = await client.get("/api/view", params={"filename": image["filename"], "subfolder": "rt", "type": "output"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    png = Image.open(io.BytesIO(await resp.read()))
    assert png.size == (8, 4) and png.getpixel((0, 0))[:3] == (0, 255, 0)
    assert '"w": 1' in png.info["workflow"] and "SaveImage" in png.info["prompt"]
    webp = await client.get("/view", params={"filename": image["filename"], "subfolder": "rt", "preview": "webp;80"})
    assert webp.headers["Content-Type"] == "image/webp"

    # The same prompt again: everything comes from the cache, and output nodes still report `executed`.
    pid2 = await submit(client, prompt, client_id="alice")
    msgs = await receive_until_done(ws, pid2)
    cached = next(m for m in msgs if m["type"] == "execution_cached")
    assert {"3", "11"} <= set(cached["data"]["nodes"])
    assert {m["data"]["node"] for m in msgs if m["type"] == "executed"} == {"3", "11"}
    assert [m["data"]["node"] for m in msgs if m["type"] == "executing"] == [None]
    await ws.close()


async def test_progress_preview_frames_and_other_clients(make_client, engine):
    # Previews go only to clients that ask, as the editor's feature_flags do (ComfyUI's default --preview-method none,
    # nodegraph serve's too, sends API clients none: a client that takes every binary frame for a result must not
    # get previews).
    client = await make_client(engine, preview_method="none")
    alice = await client.ws_connect("/ws?clientId=alice")
    bob = await client.ws_connect("/api/ws?clientId=bob")
    await alice.receive_json(timeout=5)
    await bob.receive_json(timeout=5)
    await alice.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    flags = await alice.receive_json(timeout=5)  # the server answers with its own flags, as ComfyUI does
    assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is False
    pid = await submit(client, slow(steps=3, step_ms=5, preview=True, tag="p"), client_id="alice")
    msgs = await receive_until_done(alice, pid)
    progress = [m["data"] for m in msgs if isinstance(m, dict) and m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"], p["prompt_id"]) for p in progress] == [(i, 3, "1", pid) for i in (1, 2, 3)]
    frames = [m for m in msgs if isinstance(m, bytes)]
    assert len(frames) == 3
    assert struct.unpack(">II", frames[0][:8]) == (1, 2) and frames[0][8:12] == b"\x89PNG"
    # An API client that sent no feature flags gets the progress messages but no preview frames.
    pid = await submit(client, slow(steps=3, step_ms=5, preview=True, tag="q"), client_id="bob")
    msgs = await receive_until_done(bob, pid)
    assert kinds(msgs).count("progress") == 3 and "binary" not in kinds(msgs)
    pid = await submit(client, slow(steps=3, step_ms=5, preview=True, tag="p2"), client_id="alice")
    # Bob sees the status broadcasts but none of alice's prompt events.
    seen = []
    while True:
        try:
            seen.append(await bob.receive_json(timeout=0.3))
        except asyncio.TimeoutError:
            break
    assert seen and {m["type"] for m in seen} == {"status"}
    assert "binary" in kinds(await receive_until_done(alice, pid))
    await alice.close()
    await bob.close()


@pytest.mark.parametrize("method", ["none", "auto", "latent2rgb", None])
async def test_preview_method_sends_previews_to_every_client_unless_none(make_client, engine, method):
    client = await make_client(engine, **({"preview_method": method} if method else {}))  # None: create_app's auto
    ws = await client.ws_connect("/ws?clientId=api")
    await ws.receive_json(timeout=5)
    pid = await submit(client, slow(steps=2, step_ms=5, preview=True, tag=str(method)), client_id="api")
    frames = [m for m in await receive_until_done(ws, pid) if isinstance(m, bytes)]
    assert len(frames) == (0 if method == "none" else 2)
    await ws.close()


async def test_preview_method_is_checked():
    from nodegraph.server import ServerSettings

    with pytest.raises(ValueError, match="preview_method='vae': use one of none, auto, latent2rgb, taesd"):
        ServerSettings(preview_method="vae")


async def test_execution_error_is_reported_and_recorded(client):
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json(timeout=5)
    pid = await submit(client, chain(5, 0, "floor_divide"), client_id="c1")
    msgs = await receive_until_done(ws, pid)
    err = next(m["data"] for m in msgs if m["type"] == "execution_error")
    assert err["node_id"] == "2" and err["node_type"] == "IntMath" and err["exception_type"] == "ZeroDivisionError"
    assert "set b to a non-zero" in err["exception_message"] and err["executed"] == ["1"]
    assert err["current_inputs"]["b"] == "0" and any("ZeroDivisionError" in line for line in err["traceback"])
    hist = (await (await client.get(f"/history/{pid}")).json())[pid]
    assert hist["status"]["status_str"] == "error" and hist["status"]["completed"] is False
    assert hist["status"]["messages"][-1][0] == "execution_error"
    await ws.close()


async def test_queue_priority_delete_and_interrupt(client):
    ws = await client.ws_connect("/ws?clientId=q")
    await ws.receive_json(timeout=5)
    running = await submit(client, slow(steps=1000, step_ms=10, tag="long"), client_id="q")
    for _ in range(200):  # wait until it runs
        if (await (await client.get("/queue")).json())["queue_running"]:
            break
        await asyncio.sleep(0.02)
    later = await submit(client, slow(steps=1, step_ms=0, tag="later"), client_id="q")
    first = await submit(client, slow(steps=1, step_ms=0, tag="first"), client_id="q", front=True)
    doomed = await submit(client, slow(steps=1, step_ms=0, tag="doomed"), client_id="q")
    queue = await (await client.get("/api/queue")).json()
    assert [e[1] for e in queue["queue_running"]] == [running]
    assert [e[1] for e in queue["queue_pending"]] == [first, later, doomed]
    assert queue["queue_pending"][0][0] < 0 and queue["queue_pending"][0][4] == ["1"]
    assert (await (await client.get("/prompt")).json()) == {"exec_info": {"queue_remaining": 4}}

    assert (await client.post("/queue", json={"delete": [doomed]})).status == 200
    assert (await client.post("/interrupt", json={"prompt_id": "not-running"})).status == 200
    assert (await client.post("/api/interrupt", json={"prompt_id": running})).status == 200
    msgs = await receive_until_done(ws, running)
    stop = next(m["data"] for m in msgs if m["type"] == "execution_interrupted")
    assert stop["node_id"] == "1" and stop["node_type"] == "SlowSteps"
    order = []
    for pid in (first, later):
        await receive_until_done(ws, pid)
        order.append(pid)
    assert order == [first, later]
    hist = await (await client.get("/history")).json()
    assert list(hist) == [running, first, later]
    assert hist[running]["status"]["status_str"] == "error"
    assert hist[running]["status"]["messages"][-1][0] == "execution_interrupted"
    assert hist[first]["outputs"]["1"] == {"text": ["first:1"]}
    assert list(await (await client.get("/history", params={"max_items": 2})).json()) == [first, later]
    assert list(await (await client.get("/history", params={"max_items": 1, "offset": 0})).json()) == [running]
    assert (await client.post("/history", json={"delete": [first]})).status == 200
    assert list(await (await client.get("/history")).json()) == [running, later]
    assert await (await client.get(f"/history/{first}")).json() == {}
    assert (await client.post("/history", json={"clear": True})).status == 200
    assert await (await client.get("/history")).json() == {}
    await ws.close()


async def test_queue_clear_and_free(client):
    blocker = await submit(client, slow(steps=1000, step_ms=10, tag="block"))
    ids = [await submit(client, slow(steps=1, step_ms=0, tag=str(i))) for i in range(3)]
    assert (await client.post("/queue", json={"clear": True})).status == 200
    queue = await (await client.get("/queue")).json()
    assert queue["queue_pending"] == [] and [e[1] for e in queue["queue_running"]] == [blocker]
    assert (await client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
    assert (await client.post("/interrupt")).status == 200  # no body: interrupt whatever runs
    for _ in range(200):
        if (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 0:
            break
        await asyncio.sleep(0.02)
    hist = await (await client.get("/history")).json()
    assert list(hist) == [blocker] and not set(ids) & set(hist)


async def test_catalogue_system_and_plugin_routes(client):
    info = await (await client.get("/object_info")).json()
    assert {"PrimitiveInt", "IntMath", "SaveImage", "SlowSteps"} <= set(info)
    assert info["IntMath"]["input"]["required"]["operation"][0][:2] == ["add", "subtract"]
    one = await (await client.get("/api/object_info/IntMath")).json()
    assert one == {"IntMath": info["IntMath"]}
    assert await (await client.get("/object_info/NoSuchNode")).json() == {}
    folders = await (await client.get("/models")).json()
    assert {"checkpoints", "loras", "vae", "embeddings"} <= set(folders)
    assert await (await client.get("/models/checkpoints")).json() == []
    assert (await client.get("/models/nope")).status == 404
    assert await (await client.get("/embeddings")).json() == []
    features = await (await client.get("/features")).json()
    assert features["max_upload_size"] == 50 * 1024 * 1024
    for url in await (await client.get("/extensions")).json():  # plugins' editor scripts are served
        resp = await client.get(url)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
    assert (await client.get("/extensions/nope/x.js")).status == 404
    stats = await (await client.get("/api/system_stats")).json()
    assert stats["system"]["python_version"] and stats["system"]["ram_total"] > 0
    assert stats["devices"] and {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
    assert await (await client.get("/server_test/ping")).json() == {"pong": True}
    assert await (await client.get("/api/server_test/ping")).json() == {"pong": True}


async def test_internal_files_lists_a_folder_newest_first(client, engine):
    import os

    out = engine.config.outputs_dir
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("b.png", "a.png", ".hidden.png")):
        (out / name).write_bytes(b"x")
        os.utime(out / name, (1_000_000_000 + i, 1_000_000_000 + i))
    (out / "sub").mkdir(exist_ok=True)
    assert await (await client.get("/internal/files/output")).json() == ["a.png", "b.png"]
    resp = await client.get("/internal/files/models")
    assert resp.status == 400 and "input, output or temp" in (await resp.json())["error"]["message"]


def png_bytes(size=(5, 3), color=(10, 20, 30, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, color).save(buf, format="PNG")
    return buf.getvalue()


def form(data: bytes, filename: str, **fields):
    import aiohttp

    f = aiohttp.FormData()
    f.add_field("image", data, filename=filename, content_type="image/png")
    for k, v in fields.items():
        f.add_field(k, v)
    return f


async def test_upload_lists_in_combo_renames_and_masks(client):
    resp = await client.post("/upload/image", data=form(png_bytes(), "cat.png"))
    assert resp.status == 200 and await resp.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    combo = (await (await client.get("/object_info/LoadImage")).json())["LoadImage"]["input"]["required"]["image"]
    assert "cat.png" in combo[0]
    same = await (await client.post("/upload/image", data=form(png_bytes(), "cat.png"))).json()
    assert same["name"] == "cat.png"  # identical bytes: reused
    other = await (await client.post("/upload/image", data=form(png_bytes(color=(1, 2, 3, 255)), "cat.png"))).json()
    assert other["name"] == "cat (1).png"
    over = await (await client.post("/api/upload/image", data=form(png_bytes(color=(9, 9, 9, 255)), "cat.png",
                                                                  overwrite="true", subfolder="sub"))).json()
    assert over == {"name": "cat.png", "subfolder": "sub", "type": "input"}
    view = await client.get("/view", params={"filename": "cat.png", "subfolder": "sub", "type": "input"})
    assert Image.open(io.BytesIO(await view.read())).getpixel((0, 0)) == (9, 9, 9, 255)

    mask = png_bytes(color=(0, 0, 0, 0))
    ref = '{"filename": "cat.png", "subfolder": "", "type": "input"}'
    resp = await client.post("/upload/mask", data=form(mask, "cat_mask.png", original_ref=ref))
    assert resp.status == 200, await resp.text()
    masked = await (await client.get("/view", params={"filename": "cat_mask.png", "type": "input"})).read()
    assert Image.open(io.BytesIO(masked)).getpixel((0, 0)) == (10, 20, 30, 0)
    alpha = await client.get("/view", params={"filename": "cat.png", "type": "input", "channel": "a"})
    assert Image.open(io.BytesIO(await alpha.read())).getpixel((0, 0))[3] == 255


async def test_a_second_server_on_the_same_home_is_refused(client, make_client, engine):
    from nodegraph.server.app import HomeInUseError

    with pytest.raises(HomeInUseError, match="another nodegraph server"):
        await make_client(engine)
    assert (await client.get("/prompt")).status == 200
