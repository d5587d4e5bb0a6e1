"""Workflow files as ComfyUI users have them: API/editor JSON, PNG text chunks and the EXIF of (animated) WEBP.

``nodegraph run``/``validate`` say on stderr which form they read, and a missing node class is named together with
the pack or model family that provides it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph.cli import PREVIEW_METHODS, main
from nodegraph.known_classes import provider_of
from nodegraph.workflow import WorkflowFormatError, read_workflow_file

API = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
       "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "multiply"}},
       "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
UI = {"last_node_id": 1, "last_link_id": 0, "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4,
      "nodes": [{"id": 1, "type": "ShowValue", "mode": 0, "inputs": [], "outputs": [], "widgets_values": []}]}


def save_webp(path: Path, prompt: dict | None, extra_pnginfo: dict | None, frames: int = 3) -> Path:
    """An animated WEBP carrying its workflow as ComfyUI's SaveAnimatedWEBP writes it: ``prompt:`` in EXIF tag
    0x0110, each extra_pnginfo entry (the editor's ``workflow``) from 0x010f downwards."""
    images = [Image.new("RGB", (16, 16), (40 * i, 80, 160)) for i in range(frames)]
    exif = images[0].getexif()
    if prompt is not None:
        exif[0x0110] = "prompt:" + json.dumps(prompt)
    tag = 0x010F
    for key, value in (extra_pnginfo or {}).items():
        exif[tag] = f"{key}:{json.dumps(value)}"
        tag -= 1
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, exif=exif, lossless=False,
                   quality=80, method=4)
    return path


def save_png(path: Path, chunks: dict[str, object]) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, json.dumps(value))
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_run_validate_and_inspect_read_an_animated_webp(tmp_path, capsys):
    webp = save_webp(tmp_path / "anim.webp", API, {"workflow": UI, "note": "hello"})
    with Image.open(webp) as img:
        assert img.format == "WEBP" and getattr(img, "n_frames", 1) == 3
    loaded = read_workflow_file(webp)
    assert loaded.data == API and loaded.extra == {"workflow": UI, "note": "hello"} and loaded.image
    assert loaded.describe() == "WEBP EXIF prompt, API format"
    assert main(["run", str(webp), "--home", str(tmp_path / "home")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "3: 6" and f"read {webp}: WEBP EXIF prompt, API format" in out.err
    assert main(["validate", str(webp), "--home", str(tmp_path / "home")]) == 0
    assert f"read {webp}: WEBP EXIF prompt, API format" in capsys.readouterr().err
    assert main(["inspect", str(webp), "--home", str(tmp_path / "home")]) == 0
    text = capsys.readouterr().out
    assert "IntMath" in text and "editor workflow: present" in text


def test_a_webp_without_a_workflow_is_refused_clearly(tmp_path, capsys):
    bare = tmp_path / "bare.webp"
    Image.new("RGB", (8, 8)).save(bare)
    assert main(["run", str(bare), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "is a WEBP image that carries no workflow" in err and "codec" not in err
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xafnot json at all")
    with pytest.raises(WorkflowFormatError, match="neither JSON nor an image"):
        read_workflow_file(garbage)
    ui_only = read_workflow_file(save_webp(tmp_path / "ui.webp", None, {"workflow": UI}))
    assert ui_only.data == UI and ui_only.describe() == "WEBP EXIF workflow, editor format (converted)"


def test_large_workflows_survive_the_exif_round_trip(tmp_path):
    big = dict(API, **{str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}, "_meta": {"title": "x" * 200}}
                       for i in range(10, 1000)})
    loaded = read_workflow_file(save_webp(tmp_path / "big.webp", big, {"workflow": UI}, frames=1))
    assert len(json.dumps(big)) > 200_000 and loaded.data == big and loaded.extra["workflow"] == UI


def test_png_chunks_and_json_say_what_was_read(tmp_path, capsys):
    png = save_png(tmp_path / "a.png", {"prompt": API, "workflow": UI})
    assert main(["validate", str(png), "--home", str(tmp_path / "home")]) == 0
    assert f"read {png}: PNG prompt chunk, API format" in capsys.readouterr().err
    # A PNG whose name says nothing: the content decides.
    renamed = png.rename(tmp_path / "saved.bin")
    assert read_workflow_file(renamed).describe() == "PNG prompt chunk, API format"
    only_ui = save_png(tmp_path / "ui.png", {"workflow": UI})
    loaded = read_workflow_file(only_ui)
    assert loaded.data == UI and loaded.describe() == "PNG workflow chunk, editor format (converted)"
    api_json = tmp_path / "api.json"
    api_json.write_text(json.dumps(API), encoding="utf-8-sig")  # a BOM, as some Windows editors write
    assert main(["validate", str(api_json), "--home", str(tmp_path / "home")]) == 0
    assert f"read {api_json}: API format" in capsys.readouterr().err
    ui_json = tmp_path / "ui.json"
    ui_json.write_text(json.dumps(UI))
    main(["validate", str(ui_json), "--home", str(tmp_path / "home")])
    assert f"read {ui_json}: editor format (converted)" in capsys.readouterr().err


@pytest.mark.parametrize("class_type, provider", [
    ("StableZero123_Conditioning", "a model family not yet supported (Stable Zero123"),
    ("EmptyHunyuanVideo15Latent", "video model family not yet supported (HunyuanVideo 1.5"),
    ("VHS_VideoCombine", "ComfyUI-VideoHelperSuite"),
    ("FaceDetailer", "ComfyUI-Impact-Pack"),
    ("IPAdapterAdvanced", "ComfyUI_IPAdapter_plus"),
    ("Image Save", "was-node-suite-comfyui"),
    ("Seed (rgthree)", "rgthree-comfy"),
    ("DWPreprocessor", "comfyui_controlnet_aux"),
])
def test_a_missing_class_names_its_provider(tmp_path, capsys, class_type, provider):
    wf = dict(API, **{"9": {"class_type": class_type, "inputs": {}}})
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    assert main(["validate", str(path), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert f"node type {class_type!r} is not installed; it comes from" in err and provider in err


def test_no_known_missing_class_is_a_registered_node():
    """The providers list names only classes nodegraph lacks (a class added since must leave it)."""
    from nodegraph.known_classes import KNOWN_CLASSES
    from nodegraph.testing import build_registry

    assert not set(KNOWN_CLASSES) & set(build_registry().nodes)


def test_unknown_classes_without_a_known_provider_keep_the_plain_message(tmp_path, capsys):
    assert provider_of("SomethingNobodyWrote") is None
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "SomethingNobodyWrote", "inputs": {}}}))
    assert main(["validate", str(path), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "'SomethingNobodyWrote' is not installed" in err and "comes from" not in err


def test_serve_preview_choices_match_the_server_settings():
    from nodegraph.server.settings import PREVIEW_METHODS as SETTINGS_METHODS

    assert PREVIEW_METHODS == SETTINGS_METHODS


def test_load_image_output_reads_the_output_folder(engine):
    """LoadImageOutput lists output images newest first, annotated as ComfyUI saves them, and loads one."""
    import os

    from PIL import Image

    out = engine.config.outputs_dir
    out.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (4, 2), (255, 0, 0, 128)).save(out / "old.png")
    Image.new("RGB", (3, 5), (0, 0, 255)).save(out / "new.png")
    os.utime(out / "old.png", (1_000_000_000, 1_000_000_000))
    entry = engine.registry.catalogue_entry("LoadImageOutput", engine.config)
    values, opts = entry["input"]["required"]["image"]
    assert values[:2] == ["new.png [output]", "old.png [output]"]
    assert opts["image_folder"] == "output" and opts["remote"]["route"] == "/internal/files/output"
    from nodegraph.testing_graphs import capture_engine, run_captured

    eng = capture_engine(engine.config)
    result, cap = run_captured(eng, {"l": {"class_type": "LoadImageOutput", "inputs": {"image": "old.png [output]"}},
                                     "i": {"class_type": "Capture", "inputs": {"value": ["l", 0]}},
                                     "m": {"class_type": "Capture", "inputs": {"value": ["l", 1]}}})
    result.raise_for_status()
    assert cap["i"].shape == (1, 2, 4, 3) and float(cap["i"][0, 0, 0, 0]) == 1.0
    assert abs(float(cap["m"][0, 0, 0]) - (1 - 128 / 255)) < 1e-6  # ComfyUI's mask: 1 - alpha
