"""CheckpointLoader (with an LDM config) and DiffusersLoader on the tiny model."""

from __future__ import annotations

import shutil

import pytest
import torch
from graphs import make_engine, run, txt2img


@pytest.fixture(scope="module")
def engine(tiny_sd):
    eng = make_engine(tiny_sd.config)
    configs = eng.config.model_dir("configs")
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "v-pred.yaml").write_text("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
                                         "  params:\n    parameterization: \"v\"\n    linear_start: 0.00085\n")
    (configs / "plain.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    (configs / "bad.yaml").write_text("model: [unclosed\n")
    diffusers = eng.config.model_dir("diffusers")
    diffusers.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_sd.folder, diffusers / "tiny-pipe")
    return eng


def _model(engine, config_name):
    wf = {"l": {"class_type": "CheckpointLoader", "inputs": {"config_name": config_name, "ckpt_name": "tiny-sd"}},
          "m": {"class_type": "Capture", "inputs": {"value": ["l", 0]}}}
    return run(engine, wf)


def test_config_states_the_prediction_type(engine):
    result, cap = _model(engine, "v-pred.yaml")
    result.raise_for_status()
    assert cap["m"].prediction_type == "v_prediction"
    result, cap = _model(engine, "plain.yaml")  # no parameterization: the checkpoint's own
    result.raise_for_status()
    assert cap["m"].prediction_type == "epsilon"
    result, _ = _model(engine, "bad.yaml")
    assert "cannot read bad.yaml as YAML" in str(result.error)


def test_v_prediction_config_changes_the_image(engine):
    base = txt2img(steps=2)
    _, plain = run(engine, base)
    wf = txt2img(steps=2)
    wf["ckpt"] = {"class_type": "CheckpointLoader", "inputs": {"config_name": "v-pred.yaml", "ckpt_name": "tiny-sd"}}
    result, vpred = run(engine, wf)
    result.raise_for_status()
    assert not torch.allclose(plain["img"], vpred["img"])


def test_diffusers_loader_equals_the_checkpoint_folder(engine):
    names = engine.registry.catalogue_entry("DiffusersLoader", engine.config)["input"]["required"]["model_path"][0]
    assert names == ["tiny-pipe"]
    wf = txt2img(steps=2)
    _, ref = run(engine, wf)
    wf["ckpt"] = {"class_type": "DiffusersLoader", "inputs": {"model_path": "tiny-pipe"}}
    result, cap = run(engine, wf)
    result.raise_for_status()
    assert torch.equal(cap["img"], ref["img"])
