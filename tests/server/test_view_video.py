"""/view serves video and audio so the editor's <video>/<audio> elements play them: the right content type, inline,
``Accept-Ranges: bytes`` and 206 partial content for byte ranges; /upload/image takes video and audio files (as
ComfyUI's upload widgets send them), checked with their own demuxer and capped like images. A real server on a
loopback port (``nodegraph_server``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import torch

from nodegraph.media import encode_video, save_audio


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _upload(url: str, filename: str, data: bytes, route: str = "/upload/image",
            fields: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    boundary = "vIdEoBoUnDaRy"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in (fields or {}).items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + route, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def media(engine) -> dict[str, bytes]:
    """An mp4, a webm and a flac in the output folder."""
    out = engine.config.outputs_dir
    frames = torch.rand(6, 32, 48, 3)
    encode_video(out / "clip.mp4", frames, 12)
    encode_video(out / "clip.webm", frames, 12, container="webm")
    wave = {"waveform": torch.zeros(1, 1, 4800), "sample_rate": 48000}
    save_audio(out / "tone.flac", wave)
    return {name: (out / name).read_bytes() for name in ("clip.mp4", "clip.webm", "tone.flac")}


@pytest.mark.parametrize("name,ctype", [("clip.mp4", "video/mp4"), ("clip.webm", "video/webm"),
                                        ("tone.flac", "audio/flac")])
def test_whole_file_inline_with_its_type_and_ranges_offered(engine, nodegraph_server, media, name, ctype) -> None:
    url = nodegraph_server(engine)
    status, headers, body = _get(f"{url}/view?filename={name}&type=output")
    assert status == 200 and body == media[name]
    assert headers["Content-Type"] == ctype and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Disposition"].startswith("inline")
    status, headers, body = _get(f"{url}/api/view?filename={name}", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(media[name]) and body == b""


def test_byte_ranges_answer_206_with_exactly_those_bytes(engine, nodegraph_server, media) -> None:
    url, data = nodegraph_server(engine), media["clip.mp4"]
    size = len(data)
    for spec, first, last in (("0-99", 0, 99), ("0-", 0, size - 1), ("100-", 100, size - 1),
                              ("-50", size - 50, size - 1), (f"10-{size + 500}", 10, size - 1)):
        status, headers, body = _get(f"{url}/view?filename=clip.mp4", {"Range": f"bytes={spec}"})
        assert status == 206, spec
        assert headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
        assert body == data[first:last + 1] and headers["Content-Type"] == "video/mp4", spec


def test_unsatisfiable_ranges_say_the_length(engine, nodegraph_server, media) -> None:
    url, size = nodegraph_server(engine), len(media["clip.webm"])
    status, headers, _ = _get(f"{url}/view?filename=clip.webm", {"Range": f"bytes={size + 10}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, _, _ = _get(f"{url}/view?filename=clip.webm")  # the server keeps serving
    assert status == 200


def test_path_checks_still_hold_for_video(engine, nodegraph_server, media) -> None:
    url = nodegraph_server(engine)
    (engine.config.home / "secret.mp4").write_bytes(media["clip.mp4"])
    for query in ("filename=../secret.mp4", "filename=secret.mp4&subfolder=..", "filename=%2e%2e/secret.mp4",
                  "filename=/etc/passwd", "filename=clip.mp4&type=../output"):
        status, _, body = _get(f"{url}/view?{query}", {"Range": "bytes=0-10"})
        assert status in (400, 403, 404), (query, status)
        assert body != media["clip.mp4"][:11]


def test_video_and_audio_uploads_land_in_input_and_list_for_the_loaders(engine, nodegraph_server, media) -> None:
    url = nodegraph_server(engine)
    assert _upload(url, "my clip.mp4", media["clip.mp4"]) == (200, {"name": "my clip.mp4", "subfolder": "",
                                                                    "type": "input"})
    assert _upload(url, "clip.webm", media["clip.webm"])[0] == 200
    assert _upload(url, "tone.flac", media["tone.flac"])[0] == 200
    assert (engine.config.input_dir / "my clip.mp4").read_bytes() == media["clip.mp4"]
    status, _, body = _get(f"{url}/object_info/LoadVideo")
    assert json.loads(body)["LoadVideo"]["input"]["required"]["file"][0] == ["clip.webm", "my clip.mp4"]
    status, _, body = _get(f"{url}/object_info/LoadAudio")
    assert json.loads(body)["LoadAudio"]["input"]["required"]["audio"][0] == ["clip.webm", "my clip.mp4",
                                                                             "tone.flac"]
    status, _, body = _get(f"{url}/view?filename=my%20clip.mp4&type=input", {"Range": "bytes=0-7"})
    assert status == 206 and body == media["clip.mp4"][:8]


def test_bad_media_uploads_are_refused_with_the_reason(engine, nodegraph_server, media) -> None:
    url = nodegraph_server(engine, max_upload_bytes=len(media["clip.mp4"]) - 1)
    status, body = _upload(url, "junk.mp4", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 10)
    assert status == 400 and body["error"]["type"] == "invalid_media" and "junk.mp4" in body["error"]["message"]
    status, body = _upload(url, "list.m3u8", b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    assert status == 400 and ".mp4" in body["error"]["message"]
    status, body = _upload(url, "clip.mp4", media["clip.mp4"] * 3)
    assert status == 413 and "limit" in body["error"]["message"]
    ref = json.dumps({"filename": "clip.webm", "subfolder": "", "type": "output"})
    status, body = _upload(url, "clip.webm", media["clip.webm"], route="/upload/mask", fields={"original_ref": ref})
    assert status == 400 and "image extension" in body["error"]["message"]
    assert not any(engine.config.input_dir.iterdir())
