"""ComfyUI_examples' Flux workflows (prompts extracted from the PNGs of the flux folder into flux_examples/):
they validate with only the model files missing, and the all-in-one checkpoint example runs on the tiny Flux
saved under the example's file name (at 64×64 and 2 steps, to stay fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.validation import ValidationReport

EXAMPLES = sorted((Path(__file__).parent / "flux_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name",
               "control_net_name", "style_model_name", "image"}


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["prompt"]


#: Required inputs ComfyUI added after the Redux example was saved (its editor workflow gets their defaults).
NEWER_INPUTS = {("CLIPVisionEncode", "crop"), ("StyleModelApply", "strength"), ("StyleModelApply", "strength_type")}


def test_examples_validate_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    checked, skipped = [], []
    for path in EXAMPLES:
        prompt = _prompt(path)
        absent = sorted({n["class_type"] for n in prompt.values() if engine.registry.get(n["class_type"]) is None})
        if absent:
            skipped.append((path.stem, absent))
            continue
        checked.append(path.stem)
        with pytest.raises(ValidationReport) as info:  # the model files are missing here
            engine.prepare(prompt)
        for node_id, entry in info.value.node_errors.items():
            for error in entry["errors"]:
                name = error["extra_info"].get("input_name")
                if error["type"] == "required_input_missing" and (entry["class_type"], name) in NEWER_INPUTS:
                    continue  # saved before ComfyUI added the input: ComfyUI refuses this API prompt too
                assert error["type"] == "value_not_in_list" and name in FILE_INPUTS, (path.name, node_id, error)
    print(f"\nflux examples validated: {checked}; skipped for classes we lack: {skipped}")
    assert {"flux_dev_checkpoint_example", "flux_schnell_checkpoint_example", "flux_dev_example"} <= set(checked)


def test_checkpoint_example_runs_on_the_tiny_model(tiny_flux, tmp_path):
    prompt = _prompt(Path(__file__).parent / "flux_examples" / "flux_dev_checkpoint_example.json")
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptySD3LatentImage":
            inputs.update(width=64, height=64)
        if node["class_type"] == "KSampler":
            inputs.update(steps=2)
    engine = Engine(EngineConfig(home=tiny_flux.home, output_dir=tmp_path / "out"))
    result = engine.run(engine.prepare(prompt))
    result.raise_for_status()
    images = [p for p in (tmp_path / "out").rglob("*.png")]
    assert len(images) == 1
    import numpy as np
    from PIL import Image

    with Image.open(images[0]) as img:
        assert img.size == (64, 64)
        assert float(np.asarray(img, dtype=np.float32).std()) > 0  # not a blank image
