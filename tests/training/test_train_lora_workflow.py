"""The flagship workflows/train_lora.json runs with `nodegraph run` on the embedded model: dataset → training →
saved LoRA + loss plot + a before|after image. The full workflow trains for minutes (bench/train_lora_adherence.py
measures it); here the same graph runs with fewer steps and images, so it proves the wiring in about a minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_lora_workflow_runs_with_the_cli(tmp_path):
    wf = json.loads((ROOT / "workflows" / "train_lora.json").read_text())
    assert wf["23"]["inputs"]["steps"] >= 100 and wf["4"]["inputs"]["ckpt_name"] == "nodegraph-shapes-v1"
    wf["23"]["inputs"]["steps"] = 6
    wf["20"]["inputs"].update(count=4, prior_images=4)
    small = tmp_path / "train_lora_small.json"
    small.write_text(json.dumps(wf))
    home = tmp_path / "home"
    res = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(small), "--home", str(home)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    saved = [ln for ln in lines if ln.startswith("24: saved LoRA ")]
    assert saved == ["24: saved LoRA shapes-v1-star_6_steps_00001_.safetensors"], res.stdout
    lora = home / "models" / "loras" / "shapes-v1-star_6_steps_00001_.safetensors"
    with safe_open(str(lora), "pt") as f:
        record = json.loads(f.metadata()["nodegraph_training"])
        assert any(k.startswith("lora_unet_") for k in f.keys())
    assert record["steps"] == 6 and record["images"] == 8 and record["base_model"] == "nodegraph-shapes-v1"
    assert record["prediction_type"] == "v_prediction" and len(record["base_model_sha256"]) == 64
    images = [Path(ln) for ln in lines if ln.endswith(".png")]
    sizes = sorted(Image.open(p).size for p in images)
    assert sizes == [(128, 64), (840, 520)], sizes  # before|after, and the loss plot (a temp preview)
