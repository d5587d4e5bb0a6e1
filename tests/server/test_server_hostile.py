"""Hostile and malformed input gets the right status, and the server keeps serving."""

from __future__ import annotations

import asyncio
import io
import os

import aiohttp
import pytest
from PIL import Image
from server_helpers import chain, slow

pytestmark = pytest.mark.asyncio


async def alive(client) -> None:
    resp = await client.get("/prompt")
    assert resp.status == 200 and "exec_info" in await resp.json()


def upload(data: bytes, filename: str, **fields) -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field("image", data, filename=filename, content_type="image/png")
    for k, v in fields.items():
        f.add_field(k, v)
    return f


def raw_upload(data: bytes, filename: str, **fields) -> tuple[bytes, dict[str, str]]:
    """A multipart body with the file name sent verbatim (aiohttp's FormData would percent-encode it)."""
    boundary = "xXxBoundaryxXx"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    return buf.getvalue()


async def test_view_refuses_traversal_absolute_paths_and_symlinks_out(client, engine, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    out = engine.config.outputs_dir
    (out / "ok.png").write_bytes(png())
    os.symlink(secret, out / "link.txt")
    os.symlink(tmp_path, out / "escape")
    hostile = [{"filename": "../secret.txt"}, {"filename": "../../home/../secret.txt"},
               {"filename": str(secret)}, {"filename": "secret.txt", "subfolder": ".."},
               {"filename": "secret.txt", "subfolder": str(tmp_path)}, {"filename": "link.txt"},
               {"filename": "secret.txt", "subfolder": "escape"}, {"filename": "..\\secret.txt", "subfolder": ".."},
               {"filename": "ok.png", "subfolder": "../output/../.."}]
    for params in hostile:
        resp = await client.get("/view", params=params)
        body = await resp.read()
        assert resp.status == 403, (params, resp.status)
        assert b"top secret" not in body
    assert (await client.get("/view", params={"filename": "x", "type": "secrets"})).status == 400
    assert (await client.get("/view", params={"filename": "missing.png"})).status == 404
    assert (await client.get("/view")).status == 400
    assert (await client.get("/view", params={"filename": "ok.png"})).status == 200
    await alive(client)


async def test_upload_refuses_traversal_oversize_and_non_images(make_client, engine, tmp_path):
    client = await make_client(engine, max_upload_bytes=64 * 1024)
    for name, fields in [("../evil.png", {}), ("/tmp/evil.png", {}), ("a/b.png", {}), ("..", {}),
                         ("evil.png", {"subfolder": "../.."}), ("evil.png", {"subfolder": str(tmp_path)})]:
        body, headers = raw_upload(png(), name, **fields)
        resp = await client.post("/upload/image", data=body, headers=headers)
        assert resp.status == 403, (name, fields, resp.status, await resp.text())
    assert not list(tmp_path.glob("evil*")) and not (engine.config.home / "evil.png").exists()

    big = b"\x89PNG\r\n\x1a\n" + os.urandom(100 * 1024)
    resp = await client.post("/upload/image", data=upload(big, "big.png"))
    assert resp.status == 413 and "limit" in (await resp.json())["error"]["message"]
    resp = await client.post("/upload/image", data=upload(b"<script>alert(1)</script>" * 10, "x.png"))
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_image"
    resp = await client.post("/upload/image", data=upload(png()[:40], "truncated.png"))
    assert resp.status == 400
    resp = await client.post("/upload/image", data=upload(png(), "page.html"))
    assert resp.status == 400
    resp = await client.post("/upload/image", data=upload(png(), "ok.png", type="config"))
    assert resp.status == 400
    resp = await client.post("/upload/image", data=b"not multipart", headers={"Content-Type": "text/plain"})
    assert resp.status == 400
    resp = await client.post("/upload/mask", data=upload(png(), "m.png", original_ref="not json"))
    assert resp.status == 400
    ref = '{"filename": "../../secret.png", "type": "input"}'
    resp = await client.post("/upload/mask", data=upload(png(), "m.png", original_ref=ref))
    assert resp.status == 403
    assert sorted(p.name for p in engine.config.input_dir.iterdir()) == []
    await alive(client)


async def test_bad_json_unknown_nodes_cycles_and_oversized_bodies(make_client, engine):
    client = await make_client(engine, max_json_bytes=4096)
    for body in (b"{not json", b"\xff\xfe", b"[1, 2]", b""):
        resp = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
        err = (await resp.json())["error"]
        assert resp.status == 400 and err["type"] == "invalid_json" and err["message"], body
    resp = await client.post("/queue", data=b"{oops")
    assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]["message"]
    resp = await client.post("/prompt", json={"client_id": "x"})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "no_prompt"

    resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}},
                                                         "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "missing_node_type"
    assert body["node_errors"]["1"]["class_type"] == "NoSuchNode"

    cyclic = {"1": {"class_type": "IntMath", "inputs": {"a": ["2", 0], "b": 1, "operation": "add"}},
              "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "operation": "add"}},
              "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    resp = await client.post("/prompt", json={"prompt": cyclic})
    body = await resp.json()
    assert resp.status == 400 and "cycle" in str(body["node_errors"]).lower()

    resp = await client.post("/prompt", json={"prompt": chain(value="seven")})
    assert resp.status == 400 and "1" in (await resp.json())["node_errors"]
    resp = await client.post("/prompt", json={"prompt": {"1": "not a node"}})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_prompt"
    resp = await client.post("/prompt", json={"prompt": chain(), "number": "first"})
    assert resp.status == 400
    resp = await client.post("/prompt", json={"prompt": chain(), "extra_data": {"workflow": "x" * 5000}})
    assert resp.status == 413
    async def chunked():  # no Content-Length: the cap applies while reading
        for part in (b"{", b" " * 3000, b" " * 3000, b"}"):
            yield part

    resp = await client.post("/prompt", data=chunked())
    assert resp.status == 413
    assert (await client.get("/history", params={"max_items": "lots"})).status == 400
    ok = await client.post("/prompt", json={"prompt": chain(), "prompt_id": "fixed-id"})
    assert ok.status == 200
    dup = await client.post("/prompt", json={"prompt": chain(), "prompt_id": "fixed-id"})
    assert dup.status == 400 and (await dup.json())["error"]["type"] == "duplicate_prompt_id"
    await alive(client)


async def test_queue_cap_answers_429(make_client, engine):
    client = await make_client(engine, max_pending=2)
    await client.post("/prompt", json={"prompt": slow(steps=1000, step_ms=10, tag="run")})
    for _ in range(200):
        if (await (await client.get("/queue")).json())["queue_running"]:
            break
        await asyncio.sleep(0.02)
    statuses = [(await client.post("/prompt", json={"prompt": slow(steps=1, tag=str(i))})).status for i in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert (await (await client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 3
    await client.post("/queue", json={"clear": True})
    await client.post("/interrupt")
    await alive(client)


async def test_cross_site_and_rebinding_requests_are_refused(client):
    host = f"127.0.0.1:{client.port}"
    assert (await client.get("/prompt", headers={"Origin": "http://evil.example"})).status == 403
    assert (await client.post("/prompt", json={"prompt": chain()},
                              headers={"Origin": "http://localhost:1"})).status == 403
    assert (await client.get("/prompt", headers={"Origin": "null"})).status == 403
    assert (await client.get("/prompt", headers={"Origin": f"http://{host}"})).status == 200
    # DNS rebinding: same-origin by name, but the name is not a loopback one.
    assert (await client.get("/prompt", headers={"Host": "evil.example:80", "Origin": "http://evil.example"})).status == 403
    assert (await client.get("/prompt", headers={"Host": "attacker.example"})).status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    await alive(client)
