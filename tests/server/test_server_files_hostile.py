"""File routes under hostile names and bodies: every answer is a 4xx with a clear message, never a 500, and the
server keeps serving (NUL bytes, over-long and too-deep names, multipart without a boundary, chunked floods)."""

from __future__ import annotations

import io
import os

import aiohttp
import pytest
from PIL import Image

pytestmark = pytest.mark.asyncio

DEEP = "/".join(["d"] * 400)
LONG = "n" * 300 + ".png"


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    return buf.getvalue()


def multipart(fields: dict[str, str], filename: str | None = "ok.png", data: bytes | None = None,
              boundary: str = "qQqBoundaryqQq") -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so names go out verbatim (NUL bytes included)."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if filename is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + (data or png()) + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"}


async def alive(client) -> None:
    resp = await client.get("/prompt")
    assert resp.status == 200 and "exec_info" in await resp.json()


async def assert_4xx(resp, *words: str) -> dict:
    body = await resp.json()
    assert 400 <= resp.status < 500, (resp.status, body)
    message = body["error"]["message"]
    assert message and all(w.lower() in message.lower() for w in words), (words, message)
    return body


async def test_view_answers_4xx_for_nul_long_and_deep_names(client, engine):
    (engine.config.outputs_dir / "ok.png").write_bytes(png())
    probes = [({"filename": "ok\0.png"}, "NUL"), ({"filename": "ok.png", "subfolder": "a\0b"}, "NUL"),
              ({"filename": "\0"}, "NUL"), ({"filename": LONG}, "bytes"), ({"filename": "ok.png", "subfolder": LONG},
                                                                         "bytes"),
              ({"filename": "ok.png", "subfolder": DEEP}, "deep"), ({"filename": "ok.png", "type": "out\0put"}, "folder"),
              ({"filename": "CON"}, "reserved")]
    for params, word in probes:
        resp = await client.get("/view", params=params)
        await assert_4xx(resp, word)
    os.symlink(engine.config.outputs_dir / "loop-b", engine.config.outputs_dir / "loop-a")
    os.symlink(engine.config.outputs_dir / "loop-a", engine.config.outputs_dir / "loop-b")
    await assert_4xx(await client.get("/view", params={"filename": "x.png", "subfolder": "loop-a"}), "link")
    assert (await client.get("/view", params={"filename": "ok.png"})).status == 200
    await alive(client)


async def test_upload_answers_4xx_for_nul_long_and_deep_names(client, engine):
    probes = [({}, "ok\0.png", ""), ({"subfolder": "a\0b"}, "ok.png", "NUL"), ({}, LONG, "bytes"),
              ({"subfolder": LONG}, "ok.png", "bytes"), ({"subfolder": DEEP}, "ok.png", "deep"),
              ({"subfolder": "x" * 5000}, "ok.png", ""), ({"type": "in\0put"}, "ok.png", "folder"),
              ({}, "nul.png", "reserved"), ({}, "", "")]
    for fields, name, word in probes:
        body, headers = multipart(fields, name)
        resp = await client.post("/upload/image", data=body, headers=headers)
        await assert_4xx(resp, word)
        body, headers = multipart(dict(fields, original_ref='{"filename": "x.png"}'), name)
        await assert_4xx(await client.post("/upload/mask", data=body, headers=headers))
    ref = '{"filename": "ok\\u0000.png", "subfolder": "%s", "type": "input"}' % ("d/" * 300)
    body, headers = multipart({"original_ref": ref}, "m.png")
    await assert_4xx(await client.post("/upload/mask", data=body, headers=headers))
    assert [p for p in engine.config.home.rglob("*") if p.is_file() and p.suffix == ".png"] == []
    body, headers = multipart({"subfolder": "fine"}, "ok.png")
    resp = await client.post("/upload/image", data=body, headers=headers)
    assert resp.status == 200 and (await resp.json())["name"] == "ok.png"
    body, headers = multipart({"subfolder": "fine/ok.png/deeper"}, "x.png")  # a file where a folder is needed
    await assert_4xx(await client.post("/upload/image", data=body, headers=headers), "folder")
    await alive(client)


async def test_multipart_without_a_boundary_or_with_a_broken_body_is_400(client):
    for ctype in ("multipart/form-data", "multipart/form-data; boundary=", "multipart/mixed; boundary=\"\""):
        resp = await client.post("/upload/image", data=b"--x\r\n\r\n", headers={"Content-Type": ctype})
        await assert_4xx(resp, "multipart")
    body, headers = multipart({"type": "input"})
    resp = await client.post("/upload/image", data=body[:-30], headers=headers)  # cut before the last boundary
    assert 400 <= resp.status < 500
    await alive(client)


async def test_chunked_uploads_are_capped_by_bytes_fields_and_field_size(make_client, engine):
    client = await make_client(engine, max_upload_bytes=256 * 1024)
    boundary = "cHuNkEd"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="f{{}}"\r\n\r\n{"v" * 60_000}\r\n'
    sent = 0

    async def flood(count: int, template: str):  # no Content-Length: the caps must hold while reading
        nonlocal sent
        for i in range(count):
            chunk = template.format(i).encode()
            sent += len(chunk)
            yield chunk
        yield f"--{boundary}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        resp = await client.post("/upload/image", data=flood(4000, field), headers=headers)
        status, body = resp.status, await resp.json()
        assert status in (400, 413) and "limit" in body["error"]["message"], body
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        pass  # the server may close the connection once it has answered
    assert sent < 40 * 1024 * 1024, f"the server read {sent} bytes of a flood before refusing"

    many = f'--{boundary}\r\nContent-Disposition: form-data; name="f{{}}"\r\n\r\nx\r\n'
    resp = await client.post("/upload/image", data=flood(4000, many), headers=headers)
    await assert_4xx(resp, "fields")
    big = f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{"s" * 100_000}\r\n'
    resp = await client.post("/upload/image", data=flood(1, big), headers=headers)
    await assert_4xx(resp, "limit")
    await alive(client)
    assert [p for p in engine.config.input_dir.rglob("*") if p.is_file()] == []


async def test_userdata_and_extensions_answer_4xx_for_hostile_names(client):
    for name in ("a%00b.json", "n" * 300 + ".json", "%2F".join(["d"] * 40) + "%2Fx.json", "CON.json",
                 "..%2F..%2Fqueue.sqlite3", "a%5Cb.json"):
        await assert_4xx(await client.post(f"/userdata/{name}", data=b"{}"))
        await assert_4xx(await client.get(f"/userdata/{name}"))
        await assert_4xx(await client.delete(f"/userdata/{name}"))
        await assert_4xx(await client.post(f"/userdata/ok.json/move/{name}"))
    for folder in ("a\0b", "d/" * 300, "../..", "n" * 300):
        await assert_4xx(await client.get("/userdata", params={"dir": folder}))
    for path in ("/extensions/core/" + "n" * 300 + ".js", "/extensions/nodegraph-core/" + "n" * 300 + ".js",
                 "/workflow_templates/nodegraph/" + "n" * 300 + ".json",
                 "/workflow_templates/nodegraph/" + "n" * 300 + ".png", "/" + "n" * 300 + ".js",
                 "/assets/" + "n" * 300, "/extensions/core/../../" + "a" * 300, "/%00.js", "/" + "d/" * 300 + "x"):
        resp = await client.get(path)
        assert 400 <= resp.status < 500, (path, resp.status)
    await alive(client)


async def test_userdata_paths_through_files_and_folders_answer_4xx(client):
    assert (await client.post("/userdata/a.json", data=b"{}")).status == 200
    assert (await client.post("/userdata/dir%2Fx.json", data=b"{}")).status == 200
    await assert_4xx(await client.post("/userdata/a.json%2Fb.json", data=b"{}"), "folder")
    await assert_4xx(await client.post("/userdata/dir", data=b"{}"))
    await assert_4xx(await client.post("/userdata/dir%2Fx.json/move/a.json%2Fy.json"), "folder")
    await assert_4xx(await client.post("/userdata/a.json/move/dir?overwrite=true"))
    await assert_4xx(await client.delete("/userdata/dir"))
    await assert_4xx(await client.get("/userdata/a.json%2Fb.json"))
    assert (await client.get("/userdata", params={"dir": "a.json"})).status == 200
    await alive(client)


async def test_malformed_names_are_400_and_escapes_403(client):
    resp = await client.get("/view", params={"filename": "ok\0.png"})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_path"
    resp = await client.get("/view", params={"filename": "ok.png", "subfolder": "../.."})
    assert resp.status == 403 and (await resp.json())["error"]["type"] == "forbidden_path"


async def test_userdata_accepts_a_name_at_the_length_limit(client):
    longest = "w" * 250 + ".json"  # 255 bytes: the temporary file beside it must not push past the limit
    resp = await client.post(f"/userdata/{longest}", data=b"{}")
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"/userdata/{'w' * 256}.json", data=b"{}")
    assert resp.status == 400 and "bytes" in (await resp.json())["error"]["message"]


async def test_mask_upload_with_a_hostile_original_ref_is_400(client):
    for ref in ("[" * 5000 + "]" * 5000, '{"filename": NaN}', "not json"):
        body, headers = multipart({"original_ref": ref, "type": "input"})
        resp = await client.post("/upload/mask", data=body, headers=headers)
        assert resp.status == 400, (ref[:20], resp.status, await resp.text())
    await alive(client)
