"""ControlNetApplySD3 ("Apply Controlnet with VAE"): the same control chain as ControlNetApplyAdvanced, the VAE
required; on a flow transformer (SD3, Flux) a ControlNet is refused with the fix instead of being ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flux_tiny import LAYOUTS
from test_flux_parity import graph

from nodegraph.config import EngineConfig
from nodegraph.testing_graphs import capture_engine, run_captured

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "controlnet.json"


def _with_sd3_apply(wf: dict, strength: float) -> dict:
    wf = json.loads(json.dumps(wf))
    inputs = dict(wf["13"]["inputs"], vae=["4", 2], strength=strength)
    wf["13"] = {"class_type": "ControlNetApplySD3", "inputs": inputs}
    return wf


def test_equals_apply_controlnet_on_the_embedded_model(tmp_path):
    """The shipped ControlNet workflow gives the same image through ControlNetApplySD3; strength 0 is no control."""
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    engine = capture_engine(config)
    wf = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    wf["3"]["inputs"]["steps"] = 4
    del wf["9"]
    wf["cap"] = {"class_type": "Capture", "inputs": {"value": ["8", 0]}}

    def image(prompt: dict):
        result, cap = run_captured(engine, prompt)
        result.raise_for_status()
        return cap["cap"]

    advanced = image(wf)
    assert float((image(_with_sd3_apply(wf, 1.0)) - advanced).abs().max()) == 0.0
    free = dict(wf, **{"3": dict(wf["3"], inputs=dict(wf["3"]["inputs"], positive=["6", 0], negative=["7", 0]))})
    assert float((image(_with_sd3_apply(wf, 0.0)) - image(free)).abs().max()) == 0.0
    assert float((advanced - image(free)).abs().max()) > 1e-2


def test_controlnet_on_a_flow_model_is_refused(flux_config, tmp_path):
    """A ControlNet attached to a Flux conditioning stops the run with the reason and the fix."""
    engine = capture_engine(flux_config)
    wf = graph(LAYOUTS["comfyui"])
    wf["hint"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    wf["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "nodegraph-shapes-canny-v1"}}
    wf["apply"] = {"class_type": "ControlNetApplySD3", "inputs": {
        "positive": ["guide", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "vae": ["vae", 0],
        "image": ["hint", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    wf["ks"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception) as failed:
        result.raise_for_status()
    text = str(failed.value) + repr(getattr(result, "error", ""))
    assert "ControlNets on flux transformers are not supported yet" in text and "remove the Apply ControlNet" in text
