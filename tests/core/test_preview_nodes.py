"""PreviewAny, ImageCompare, SaveImageAdvanced (nodes/image_io.py) and Video Slice (nodes/video.py) through a real
engine and server on a loopback port: /history shows their UI outputs and /view serves the files they wrote."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
import torch

from nodegraph.still_formats import encode_still

from .http_calls import call


def _call(base: str, method: str, route: str, body: Any = None) -> tuple[int, Any]:
    status, data, _ = call(base, method, route, body)
    return status, data


def _run(base: str, prompt: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Queue ``prompt`` and wait for its /history entry."""
    status, body = _call(base, "POST", "/prompt", {"prompt": prompt, "extra_data": extra or {}})
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, history = _call(base, "GET", f"/history/{pid}")
        if status == 200 and pid in history and history[pid]["status"].get("completed") is not None:
            return history[pid]
        time.sleep(0.1)
    raise AssertionError(f"prompt {pid} did not finish")


def _view(base: str, entry: dict[str, str]) -> bytes:
    query = urllib.parse.urlencode({"filename": entry["filename"], "subfolder": entry["subfolder"],
                                    "type": entry["type"]})
    status, data = _call(base, "GET", f"/view?{query}")
    assert status == 200
    return data


PACKS = ("nodes.utils", "nodes.image_io", "nodes.strings", "nodes.numbers", "nodes.video")


@pytest.fixture()
def engine(config):
    """An engine over the packs these nodes live in, plus the test kit's Capture node."""
    from nodegraph.testing import build_engine, build_registry
    from nodegraph.testing_graphs import Capture

    return build_engine(config, build_registry(Capture, builtins=PACKS))


@pytest.fixture()
def base(engine, nodegraph_server) -> str:
    """A running server over the built-in packs."""
    return nodegraph_server(engine)


def test_preview_any_and_image_compare_show_in_history(base: str) -> None:
    from PIL import Image

    prompt = {
        "red": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0xFF0000}},
        "blue": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 2, "color": 0x0000FF}},
        "cmp": {"class_type": "ImageCompare", "inputs": {"image_a": ["red", 0], "image_b": ["blue", 0],
                                                         "compare_view": ["", ""]}},
        "res": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "16:9 (Widescreen)",
                                                               "megapixels": 1.0, "multiple": 8}},
        "txt": {"class_type": "PreviewAny", "inputs": {"source": ["res", 0]}},
        "math": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a / 2", "values.a": ["res", 1]}},
        "txt2": {"class_type": "PreviewAny", "inputs": {"source": ["math", 0]}},
        "len": {"class_type": "StringLength", "inputs": {"string": ["txt2", 0]}},
        "txt3": {"class_type": "PreviewAny", "inputs": {"source": ["len", 0]}},
    }
    history = _run(base, prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    out = history["outputs"]
    assert out["txt"]["text"] == ["1368"] and out["txt2"]["text"] == ["384.0"] and out["txt3"]["text"] == ["5"]
    a, b = out["cmp"]["a_images"], out["cmp"]["b_images"]
    assert len(a) == 1 and len(b) == 2 and all(e["type"] == "temp" for e in a + b)
    assert a[0]["filename"].startswith("comfy.compare.a") and b[0]["filename"].startswith("comfy.compare.b")
    assert Image.open(io.BytesIO(_view(base, a[0]))).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert Image.open(io.BytesIO(_view(base, b[1]))).convert("RGB").getpixel((3, 2)) == (0, 0, 255)


def test_image_compare_takes_an_editor_workflow_without_the_view_value(engine) -> None:
    """The editor saves no value for the compare_view widget; converting such a workflow still gives a runnable
    prompt (the widget's default), and a compare node with nothing connected shows empty lists."""
    from nodegraph.ui_format import ui_to_api

    ui = {"nodes": [{"id": 1, "type": "ImageCompare", "mode": 0, "widgets_values": [],
                     "inputs": [{"name": "image_a", "type": "IMAGE", "link": None}]}], "links": []}
    api = ui_to_api(ui, engine.registry)
    assert api["1"]["inputs"] == {"compare_view": ["", ""]}
    result = engine.run(engine.prepare(api))
    assert result.outputs["1"] == {"a_images": [], "b_images": []}


def test_preview_any_formats_values() -> None:
    from nodegraph.nodes.image_io import PREVIEW_TEXT_CHARS, PreviewAny, preview_text

    assert preview_text(None) == "None" and preview_text(True) == "True" and preview_text(2.5) == "2.5"
    assert preview_text({"a": [1, 2]}) == json.dumps({"a": [1, 2]}, indent=4)
    assert "tensor" in preview_text(torch.zeros(2, 2))  # not JSON: str()
    out = PreviewAny().execute(None, source="x" * (PREVIEW_TEXT_CHARS + 5))
    assert out.values[0] == "x" * (PREVIEW_TEXT_CHARS + 5)  # the output keeps everything
    assert out.ui["text"][0].endswith(f"({PREVIEW_TEXT_CHARS + 5:,} characters in all)")


@pytest.mark.parametrize("fmt,depth,space", [("png", "8-bit", "sRGB"), ("png", "16-bit", "sRGB"),
                                             ("exr", "32-bit float", "linear"), ("exr", "32-bit float", "HDR")])
def test_save_image_advanced_writes_format_with_workflow(base: str, engine, fmt: str, depth: str,
                                                          space: str) -> None:
    import av
    from PIL import Image

    prompt = {"img": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 2,
                                                             "color": 0x336699}},
              "save": {"class_type": "SaveImageAdvanced", "inputs": {
                  "images": ["img", 0], "filename_prefix": "adv/test", "format": fmt,
                  "format.bit_depth": depth, "format.input_color_space": space}}}
    workflow = {"nodes": [], "links": [], "version": 0.4}
    history = _run(base, prompt, {"extra_pnginfo": {"workflow": workflow}})
    assert history["status"]["status_str"] == "success", history["status"]
    entries = history["outputs"]["save"]["images"]
    assert len(entries) == 2 and all(e["filename"].endswith("." + fmt) and e["subfolder"] == "adv" for e in entries)
    data = _view(base, entries[0])
    expected = torch.tensor([0x33, 0x66, 0x99]) / 255.0
    if fmt == "png":
        img = Image.open(io.BytesIO(data))
        assert json.loads(img.text["workflow"]) == workflow and json.loads(img.text["prompt"])["save"]
        if depth == "16-bit":
            path = engine.config.outputs_dir / "adv" / entries[0]["filename"]
            with av.open(str(path)) as container:
                pixels = next(container.decode(video=0)).to_ndarray(format="rgb48le")
            assert torch.allclose(torch.tensor(pixels[0, 0] / 65535.0).float(), expected, atol=1e-4)
        else:
            assert img.convert("RGB").getpixel((0, 0)) == (0x33, 0x66, 0x99)
    else:
        assert data[:4] == b"\x76\x2f\x31\x01" and b"workflow" in data and b"chromaticities" in data
        path = engine.config.outputs_dir / "adv" / entries[0]["filename"]
        with av.open(str(path)) as container:
            pixels = torch.tensor(next(container.decode(video=0)).to_ndarray()[0, 0])
        linear = expected if space == "linear" else \
            torch.tensor(encode_and_read_hlg(expected))
        assert torch.allclose(pixels, linear.float(), atol=1e-5)


def encode_and_read_hlg(rgb: torch.Tensor) -> list[float]:
    """The inverse HLG OETF of BT.2100 table 5, written out: E'^2 / 3 up to 0.5, (exp((E' - c) / a) + b) / 12 above."""
    import math

    a, b, c = 0.17883277, 1 - 4 * 0.17883277, 0.5 - 0.17883277 * math.log(4 * 0.17883277)
    return [float(v) ** 2 / 3.0 if v <= 0.5 else (math.exp((float(v) - c) / a) + b) / 12.0 for v in rgb]


def test_save_image_advanced_refuses_mismatched_options(engine) -> None:
    from nodegraph.validation import ValidationReport

    prompt = {"img": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
              "save": {"class_type": "SaveImageAdvanced", "inputs": {
                  "images": ["img", 0], "filename_prefix": "x", "format": "png",
                  "format.bit_depth": "32-bit float", "format.input_color_space": "sRGB"}}}
    with pytest.raises(ValidationReport) as info:
        engine.prepare(prompt)
    assert "format.bit_depth" in info.value.render()
    with pytest.raises(ValueError, match="16-bit"):
        encode_still(torch.zeros(2, 2, 3), "png", "32-bit float", "sRGB")


def test_video_slice(engine) -> None:
    from nodegraph.testing_graphs import run_captured

    frames = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 2, 2, 3) / 10
    audio = {"waveform": torch.arange(1000.0).view(1, 1, 1000), "sample_rate": 100}  # 10 s at 100 Hz

    def sliced(start: float, duration: float, strict: bool = False) -> Any:
        from nodegraph.nodes.video import VideoSlice

        from nodegraph.api import VideoFromComponents

        (video,) = VideoSlice().execute(None, VideoFromComponents(frames, 1, audio), start, duration, strict)
        return video.get_components()

    parts = sliced(2.0, 3.0)
    assert (parts.images[:, 0, 0, 0] * 10).round().tolist() == [2, 3, 4]
    assert parts.audio["waveform"][0, 0, [0, -1]].tolist() == [200, 499]
    assert (sliced(-3.0, 0.0).images[:, 0, 0, 0] * 10).round().tolist() == [7, 8, 9]
    assert sliced(8.0, 5.0).images.shape[0] == 2  # not strict: what there is
    with pytest.raises(ValueError, match="strict_duration"):
        sliced(8.0, 5.0, strict=True)
    with pytest.raises(ValueError, match="start_time inside the video"):
        sliced(11.0, 0.0)
    graph = {"img": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 12, "color": 0}},
             "vid": {"class_type": "CreateVideo", "inputs": {"images": ["img", 0], "fps": 4.0}},
             "cut": {"class_type": "Video Slice", "inputs": {"video": ["vid", 0], "start_time": 0.5,
                                                             "duration": 1.0, "strict_duration": True}},
             "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["cut", 0]}},
             "c": {"class_type": "Capture", "inputs": {"value": ["parts", 0]}}}
    _, values = run_captured(engine, graph)
    assert values["c"].shape[0] == 4  # frames 2..5 of 12 at 4 fps
