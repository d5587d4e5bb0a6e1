"""The saved workflows in workflows/ run with `nodegraph run` on the embedded model, deterministically."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
EXPECTED_SIZE = {"txt2img": (64, 64), "img2img": (64, 64), "inpaint": (64, 64), "hires_fix": (128, 128),
                 "upscale": (256, 256), "seed_sweep_switch": (64, 64), "area_composition": (128, 64),
                 "diffusion_explained": (640, 592), "custom_sampling": (64, 64), "controlnet": (64, 64),
                 "train_lora": (128, 64)}
#: Workflows taking minutes (training): left out here, run by a slow test (tests/training/test_train_lora_workflow.py).
SLOW_WORKFLOWS = {"train_lora"}
FAST_WORKFLOWS = [w for w in WORKFLOWS if w.stem not in SLOW_WORKFLOWS]
#: Workflows saving a video: (width, height), frame count and frame rate of the clip.
EXPECTED_VIDEO = {"seed_walk_video": ((64, 64), 9, 8.0)}

RERUN = r"""
import json, sys
from pathlib import Path
from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
engine = Engine(EngineConfig(home=Path(sys.argv[1]), output_dir=Path(sys.argv[2])))
for path in sys.argv[3:]:
    result = engine.run(engine.prepare(json.loads(Path(path).read_text()))).raise_for_status()
"""


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory) -> dict[str, Path]:
    """Run every workflow with the CLI, as a user would."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("out")
    paths = {}
    for wf in FAST_WORKFLOWS:
        res = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(wf), "--home", str(home),
                              "--output-dir", str(out)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{wf.name}: {res.stderr}"
        (line,) = res.stdout.split()
        paths[wf.stem] = Path(line)
    return paths


def test_every_workflow_is_covered():
    assert {w.stem for w in WORKFLOWS} == set(EXPECTED_SIZE) | set(EXPECTED_VIDEO)


@pytest.mark.parametrize("name", sorted(set(EXPECTED_SIZE) - SLOW_WORKFLOWS))
def test_output_size_and_chunks(cli_outputs, name):
    with Image.open(cli_outputs[name]) as img:
        assert img.size == EXPECTED_SIZE[name]
        prompt = json.loads(img.text["prompt"])
        manifest = json.loads(img.text["nodegraph"])
    assert prompt["4"]["inputs"]["ckpt_name"] == "nodegraph-shapes-v1"
    assert any(m["name"] == "shapes-v1" for m in manifest["models"].values())
    assert manifest["runtime"]["device"] == "cpu" and manifest["runtime"]["dtype"] == "float32"


@pytest.mark.parametrize("name", sorted(EXPECTED_VIDEO))
def test_video_size_frames_and_tags(cli_outputs, name):
    from nodegraph.media import probe_video

    info = probe_video(cli_outputs[name])
    assert ((info.width, info.height), info.frames, float(info.fps)) == EXPECTED_VIDEO[name]
    prompt, manifest = json.loads(info.metadata["prompt"]), json.loads(info.metadata["nodegraph"])
    assert prompt["4"]["inputs"]["ckpt_name"] == "nodegraph-shapes-v1"
    assert any(m["name"] == "shapes-v1" for m in manifest["models"].values())


def test_txt2img_follows_the_prompt(cli_outputs):
    from nodegraph.training.classify import classify

    with Image.open(cli_outputs["txt2img"]) as img:
        found = classify(np.asarray(img.convert("RGB")))
    assert (found["fg"], found["shape"], found["bg"]) == ("red", "circle", "blue"), found


def test_img2img_and_inpaint_change_what_they_should(cli_outputs):
    from nodegraph.training.classify import classify

    with Image.open(cli_outputs["inpaint"]) as img:
        arr = np.asarray(img.convert("RGB")).astype(int)
    # Outside the mask the blue background is kept; inside, the red square was repainted.
    corner = arr[:6, :6].reshape(-1, 3).mean(0)
    assert corner[2] > 150 and corner[0] < 100, corner
    centre = arr[28:36, 28:36].reshape(-1, 3).mean(0)
    assert not (centre[0] > 150 and centre[1] < 80 and centre[2] < 80), f"still red: {centre}"
    with Image.open(cli_outputs["img2img"]) as img:
        assert classify(np.asarray(img.convert("RGB")))["bg"] == "blue"


def test_bit_identical_across_processes(cli_outputs, tmp_path):
    out = tmp_path / "again"
    res = subprocess.run([sys.executable, "-c", RERUN, str(tmp_path / "home"), str(out), *map(str, FAST_WORKFLOWS)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for name, first in cli_outputs.items():
        again = out / first.name
        assert again.read_bytes() == first.read_bytes(), name
