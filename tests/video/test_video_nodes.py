"""The video pack's nodes in a real engine: save → load round trips, UI entries as ComfyUI's, the workflow and the
provenance manifest in each file's metadata, animated WEBP/PNG frames and durations, audio, clear errors."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from PIL import Image

from nodegraph.media import probe_video, read_apng_metadata
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.workflow import read_workflow_file

from .helpers import MovingFrames, moving_frames, psnr

WORKFLOW = {"nodes": [{"id": 1, "type": "MovingFrames"}], "links": [], "version": 0.4}
EXTRA = {"extra_pnginfo": {"workflow": WORKFLOW}}


@pytest.fixture
def video_engine(nodegraph_config):
    """An engine with the built-in packs, Capture and the MovingFrames test node."""
    return capture_engine(nodegraph_config, (MovingFrames,))


def _frames(count: int = 12, **inputs: Any) -> dict[str, Any]:
    return {"1": {"class_type": "MovingFrames", "inputs": {"count": count, "height": 64, "width": 96,
                                                          "seconds": 1.0, **inputs}}}


def _ok(result: Any) -> Any:
    assert result.status == "success", result.error
    return result


def _tags(path) -> dict[str, Any]:
    return {k.lower(): json.loads(v) for k, v in probe_video(path).metadata.items() if k.lower() in
            ("prompt", "workflow", "nodegraph")}


def test_save_video_then_load_video_round_trip(video_engine) -> None:
    graph = {**_frames(), "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12.0,
                                                                      "audio": ["1", 1]}},
             "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/clip",
                                                         "format": "auto", "codec": "auto"}},
             "4": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip",
                                                        "codec": "vp9", "fps": 12.0, "crf": 32.0}}}
    result = _ok(run_captured(video_engine, graph, extra_data=EXTRA)[0])
    assert result.outputs["3"] == {"images": [{"filename": "clip_00001_.mp4", "subfolder": "video",
                                               "type": "output"}], "animated": [True]}
    assert result.outputs["4"] == {"images": [{"filename": "clip_00001_.webm", "subfolder": "",
                                               "type": "output"}], "animated": [True]}
    out = video_engine.config.outputs_dir
    for saved in (out / "video" / "clip_00001_.mp4", out / "clip_00001_.webm"):
        tags = _tags(saved)
        assert tags["workflow"] == WORKFLOW and tags["prompt"]["3"]["class_type"] in ("SaveVideo", "CreateVideo")
        assert tags["nodegraph"]["nodes"]["1"]["class_type"] == "MovingFrames"
        shutil.copy(saved, video_engine.config.input_dir / saved.name)

    for name, floor in (("clip_00001_.mp4", 31.0), ("clip_00001_.webm", 31.0)):
        load = {"5": {"class_type": "LoadVideo", "inputs": {"file": name}},
                "6": {"class_type": "GetVideoComponents", "inputs": {"video": ["5", 0]}},
                "7": {"class_type": "Capture", "inputs": {"value": ["6", 0]}},
                "8": {"class_type": "Capture", "inputs": {"value": ["6", 1]}},
                "9": {"class_type": "Capture", "inputs": {"value": ["6", 2]}}}
        _, got = run_captured(video_engine, load)
        assert got["7"].shape == (12, 64, 96, 3) and got["9"] == 12.0
        assert psnr(got["7"], moving_frames(12, 64, 96)) >= floor
        if name.endswith(".mp4"):
            assert got["8"]["sample_rate"] == 44100 and got["8"]["waveform"].shape[1] == 2
        else:
            assert got["8"] is None  # SaveWEBM takes images only


def test_a_loaded_video_saves_again_and_lists_in_the_combo(video_engine) -> None:
    _ok(run_captured(video_engine, {**_frames(4), "2": {"class_type": "CreateVideo", "inputs": {
        "images": ["1", 0], "fps": 8.0}}, "3": {"class_type": "SaveVideo", "inputs": {
            "video": ["2", 0], "filename_prefix": "a", "format": "mp4", "codec": "h264"}}})[0])
    shutil.copy(video_engine.config.outputs_dir / "a_00001_.mp4", video_engine.config.input_dir / "in.mp4")
    (video_engine.config.input_dir / "notes.txt").write_text("not a video")
    entry = video_engine.registry.get("LoadVideo").catalogue_entry(video_engine.config)
    assert entry["input"]["required"]["file"] == [["in.mp4"], {"tooltip": "a video file in the input folder",
                                                               "video_upload": True}]
    graph = {"1": {"class_type": "LoadVideo", "inputs": {"file": "in.mp4"}},
             "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "again",
                                                         "format": "auto", "codec": "auto"}}}
    _ok(run_captured(video_engine, graph)[0])
    info = probe_video(video_engine.config.outputs_dir / "again_00001_.mp4")
    assert (info.frames, info.width, info.height, float(info.fps)) == (4, 96, 64, 8.0)


@pytest.mark.parametrize("node,ext,extra", [
    ("SaveAnimatedWEBP", "webp", {"lossless": True, "quality": 80, "method": "fastest"}),  # an input "method"
    ("SaveAnimatedPNG", "png", {"compress_level": 4})])
def test_animated_images_have_every_frame_its_duration_and_the_workflow(video_engine, node, ext, extra) -> None:
    graph = {**_frames(5), "2": {"class_type": node, "inputs": {"images": ["1", 0], "filename_prefix": "anim",
                                                                "fps": 8.0, **extra}}}
    result = _ok(run_captured(video_engine, graph, extra_data=EXTRA)[0])
    assert result.outputs["2"] == {"images": [{"filename": f"anim_00001_.{ext}", "subfolder": "",
                                               "type": "output"}], "animated": [True]}
    path = video_engine.config.outputs_dir / f"anim_00001_.{ext}"
    with Image.open(path) as img:
        assert img.n_frames == 5 and img.size == (96, 64)
        durations = []
        for i in range(img.n_frames):
            img.seek(i)
            img.load()  # WEBP frames say their duration once decoded
            durations.append(img.info["duration"])
        assert durations == [125] * 5  # int(1000 / 8), as ComfyUI
        img.seek(4)
        last = img.convert("RGB")
    expected = moving_frames(5)[4:5]
    import numpy as np
    import torch

    got = torch.from_numpy(np.asarray(last, dtype=np.float32) / 255.0)[None]
    assert psnr(got, expected) > 45  # lossless WEBP / PNG: only the 8-bit rounding
    if ext == "webp":
        loaded = read_workflow_file(path)
        assert loaded.extra["workflow"] == WORKFLOW and loaded.data["2"]["class_type"] == node
        assert loaded.extra["nodegraph"]["nodes"]["2"]["class_type"] == node
    else:
        chunks = {k: json.loads(v) for k, v in read_apng_metadata(path).items()}
        assert chunks["workflow"] == WORKFLOW and chunks["prompt"]["2"]["class_type"] == node
        assert chunks["nodegraph"]["nodes"]["2"]["class_type"] == node


def test_one_frame_is_not_marked_animated(video_engine) -> None:
    graph = {**_frames(1), "2": {"class_type": "SaveAnimatedPNG", "inputs": {
        "images": ["1", 0], "filename_prefix": "still", "fps": 6.0, "compress_level": 1}}}
    assert _ok(run_captured(video_engine, graph)[0]).outputs["2"] == {
        "images": [{"filename": "still_00001_.png", "subfolder": "", "type": "output"}]}


def test_load_audio_from_a_video_and_save_flac(video_engine) -> None:
    graph = {**_frames(6), "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 1],
                                                                      "filename_prefix": "audio/tone"}}}
    result = _ok(run_captured(video_engine, graph, extra_data=EXTRA)[0])
    assert result.outputs["2"] == {"audio": [{"filename": "tone_00001_.flac", "subfolder": "audio",
                                              "type": "output"}]}
    flac = video_engine.config.outputs_dir / "audio" / "tone_00001_.flac"
    shutil.copy(flac, video_engine.config.input_dir / "tone.flac")
    graph = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.flac"}},
             "2": {"class_type": "Capture", "inputs": {"value": ["1", 0]}}}
    _, got = run_captured(video_engine, graph)
    assert got["2"]["sample_rate"] == 44100 and got["2"]["waveform"].shape == (1, 2, 44100)
    import av

    with av.open(str(flac)) as container:
        assert json.loads(container.metadata["workflow"]) == WORKFLOW


def test_a_broken_video_fails_its_node_with_the_file_named(video_engine) -> None:
    (video_engine.config.input_dir / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    graph = {"1": {"class_type": "LoadVideo", "inputs": {"file": "broken.mp4"}},
             "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x",
                                                         "format": "auto", "codec": "auto"}}}
    result = run_captured(video_engine, graph)[0]
    assert result.status == "error" and result.error.node_id == "1"
    assert "broken.mp4" in result.error.exception_message and "valid file" in result.error.exception_message
    assert not list(video_engine.config.outputs_dir.glob("x_*"))  # nothing half-written
