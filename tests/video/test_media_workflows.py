"""Workflows read back from the media our save nodes write: mp4/webm tags (SaveVideo, SaveWEBM), APNG ``comf``
chunks (SaveAnimatedPNG), animated WEBP EXIF (SaveAnimatedWEBP) and FLAC tags (SaveAudio); ``nodegraph run``,
``validate`` and ``inspect`` take these files as they take a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodegraph.cli import main
from nodegraph.media import encode_video, save_audio
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.workflow import WorkflowFormatError, read_workflow_file

from .helpers import moving_frames, tone

WORKFLOW = {"nodes": [{"id": 1, "type": "EmptyImage"}], "links": [], "version": 0.4}
EXTRA = {"extra_pnginfo": {"workflow": WORKFLOW}}
FRAMES = {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": 0x3366CC}}

#: node → (its graph beside the frames, the saved file's extension, what ``read_workflow_file`` says it read).
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "SaveVideo": ({"2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
                   "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "clip",
                                                               "format": "auto", "codec": "auto"}}},
                  "mp4", "MP4 prompt tag"),
    "SaveWEBM": ({"3": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "clip",
                                                             "codec": "vp9", "fps": 8.0, "crf": 40.0}}},
                 "webm", "WEBM prompt tag"),
    "SaveAnimatedPNG": ({"3": {"class_type": "SaveAnimatedPNG", "inputs": {
        "images": ["1", 0], "filename_prefix": "clip", "fps": 8.0, "compress_level": 1}}}, "png", "APNG prompt comf chunk"),
    "SaveAnimatedWEBP": ({"3": {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": ["1", 0], "filename_prefix": "clip", "fps": 8.0, "lossless": False, "quality": 50,
        "method": "fastest"}}}, "webp", "WEBP EXIF prompt"),
    "SaveAudio": ({"1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.flac"}},
                   "3": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "clip"}}},
                  "flac", "FLAC prompt tag"),
}


@pytest.fixture
def media_engine(nodegraph_config):
    """An engine with the built-in packs (and Capture); a tone in input/ for LoadAudio."""
    save_audio(nodegraph_config.input_dir / "tone.flac", tone(0.25))
    return capture_engine(nodegraph_config)


def _saved(engine: Any, node: str) -> tuple[dict[str, Any], Path]:
    """Run the case's graph through the engine; (the graph, the file its save node wrote)."""
    extra_nodes, ext, _ = CASES[node]
    graph = {"1": FRAMES, **extra_nodes}
    result, _ = run_captured(engine, graph, extra_data=EXTRA)
    assert result.status == "success", result.error
    path = engine.config.outputs_dir / f"clip_00001_.{ext}"
    assert path.is_file(), sorted(p.name for p in engine.config.outputs_dir.iterdir())
    return graph, path


@pytest.mark.parametrize("node", list(CASES))
def test_the_saved_file_carries_the_prompt_workflow_and_manifest(media_engine, node) -> None:
    graph, path = _saved(media_engine, node)
    loaded = read_workflow_file(path)
    assert loaded.image and loaded.describe() == f"{CASES[node][2]}, API format"
    assert {nid: n["class_type"] for nid, n in loaded.data.items()} == {nid: n["class_type"]
                                                                        for nid, n in graph.items()}
    assert loaded.data["3"]["inputs"] == graph["3"]["inputs"]
    assert loaded.extra["workflow"] == WORKFLOW
    assert loaded.extra["nodegraph"]["nodes"]["3"]["class_type"] == node
    assert set(loaded.extra) == {"workflow", "nodegraph"}  # FFmpeg's own tags (encoder, brands) are not read back


@pytest.mark.parametrize("node", list(CASES))
def test_nodegraph_run_validate_and_inspect_take_the_saved_file(media_engine, node, capsys) -> None:
    _, path = _saved(media_engine, node)
    home = str(media_engine.config.home)
    capsys.readouterr()
    assert main(["validate", str(path), "--home", home]) == 0
    assert f"read {path}: {CASES[node][2]}, API format" in capsys.readouterr().err
    assert main(["run", str(path), "--home", home]) == 0
    out = capsys.readouterr()
    assert f"read {path}: {CASES[node][2]}, API format" in out.err
    again = path.with_name(f"clip_00002_.{CASES[node][1]}")
    assert again.is_file()  # the run made the same output again, carrying the workflow it read
    assert read_workflow_file(again).extra["workflow"] == WORKFLOW
    assert main(["inspect", str(path), "--home", home]) == 0
    shown = capsys.readouterr().out
    assert f"(read: {CASES[node][2]}, API format)" in shown and f"3 {node}" in shown
    assert "manifest:\n  nodegraph " in shown and "editor workflow: present" in shown


def test_media_without_a_workflow_say_which_node_writes_one(tmp_path) -> None:
    video = tmp_path / "plain.webm"
    encode_video(video, moving_frames(2, 16, 16), 4.0, container="webm")
    with pytest.raises(WorkflowFormatError, match=r"WEBM video or audio file that carries no workflow .*SaveVideo"):
        read_workflow_file(video)
    audio = tmp_path / "plain.flac"
    save_audio(audio, tone(0.1))
    with pytest.raises(WorkflowFormatError, match=r"FLAC video or audio file .*no 'prompt' or 'workflow' tag"):
        read_workflow_file(audio)


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_other_audio_formats_carry_their_workflow_in_tags(tmp_path, fmt) -> None:
    prompt = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "tone.flac"}}}
    path = tmp_path / f"clip.{fmt}"
    save_audio(path, tone(0.1), fmt, metadata={"prompt": prompt, "workflow": WORKFLOW})
    loaded = read_workflow_file(path)  # opus keeps its tags on the stream, not the container
    assert loaded.data == prompt and loaded.extra == {"workflow": WORKFLOW}
    assert loaded.describe() == f"{fmt.upper()} prompt tag, API format"


def test_a_broken_media_file_is_a_clear_error_not_a_crash(tmp_path, capsys) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    with pytest.raises(WorkflowFormatError, match=r"broken.mp4 cannot be read for a workflow"):
        read_workflow_file(broken)
    assert main(["validate", str(broken), "--home", str(tmp_path / "home")]) == 2
    assert "cannot be read for a workflow" in capsys.readouterr().err
