"""The demo plugin through nodegraph.testing: catalogue, sampler table, a real tiny model, and a real server."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import torch

import nodegraph_sdk_demo
from nodegraph import api
from nodegraph_sdk_demo.nodes import HINT_KEY


class Keep(api.Node):
    """Test output node: keeps the latent it receives."""

    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"samples": api.Link("LATENT")}
    KEPT: dict[str, Any] = {}

    def execute(self, ctx: api.ExecutionContext, samples: api.Latent) -> tuple[()]:
        Keep.KEPT[ctx.node_id] = samples["samples"]
        return ()


def test_the_plugin_registers_its_nodes_sampler_and_schedule(make_engine) -> None:
    engine = make_engine(nodegraph_sdk_demo)
    assert engine.registry.errors == []
    assert {"CheckpointWithVAE", "RegionHint"} <= set(engine.registry.nodes)
    entry = engine.registry.get("KSampler").catalogue_entry(engine.config)["input"]["required"]
    assert "hinted_euler" in entry["sampler_name"][0] and "cosine" in entry["scheduler"][0]
    assert api.unsupported_pair(engine.config, "hinted_euler", "cosine") is None
    assert "plugin samplers only" in (api.unsupported_pair(engine.config, "euler", "cosine") or "")


def test_region_hint_attaches_a_map_without_mutating_its_input(make_engine) -> None:
    from nodegraph_sdk_demo.nodes import RegionHint

    cond = [(torch.zeros(1, 4, 8), {"strength": 1.0})]
    image = torch.ones(1, 16, 16, 3)
    (out,) = RegionHint().execute(None, cond, image, 0.5)  # type: ignore[arg-type]
    assert HINT_KEY not in cond[0][1] and out[0][1][HINT_KEY]["strength"] == 0.5
    assert out[0][1][HINT_KEY]["map"].shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="connect an IMAGE"):
        RegionHint().execute(None, cond, torch.ones(16, 16), 0.5)  # type: ignore[arg-type]


def _graph(ckpt: str, strength: float, sampler: str = "hinted_euler", scheduler: str = "karras") -> dict[str, Any]:
    return {
        "load": {"class_type": "CheckpointWithVAE", "inputs": {"ckpt_name": ckpt, "vae_name": "(checkpoint's own)"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["load", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["load", 1]}},
        "shape": {"class_type": "ShapeImage", "inputs": {"shape": "circle", "color": "white", "background": "black",
                                                          "size": 32, "center_x": 0.5, "center_y": 0.5,
                                                          "radius": 0.25}},
        "hint": {"class_type": "RegionHint", "inputs": {"conditioning": ["pos", 0], "image": ["shape", 0],
                                                        "strength": strength}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["load", 0], "seed": 3, "steps": 4, "cfg": 6.0, "sampler_name": sampler, "scheduler": scheduler,
            "positive": ["hint", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        "keep": {"class_type": "Keep", "inputs": {"samples": ["sample", 0]}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["load", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "demo"}},
    }


@pytest.mark.slow
def test_the_hint_steers_the_sampler_on_a_real_model(make_engine, tiny_checkpoint, run_graph) -> None:
    engine = make_engine(nodegraph_sdk_demo, Keep, config=tiny_checkpoint.config)
    results = {}
    for label, strength, sampler in (("off", 0.0, "hinted_euler"), ("on", 1.0, "hinted_euler"),
                                     ("builtin", 0.0, "euler")):
        result = run_graph(engine, _graph(tiny_checkpoint.name, strength, sampler))
        results[label] = Keep.KEPT["keep"].clone()
        assert result.outputs["save"]["images"][0]["filename"].endswith(".png")
    assert torch.isfinite(results["on"]).all()
    # strength 0 is plain Euler (the same latent as the built-in euler); strength 1 changes it
    assert torch.allclose(results["off"], results["builtin"], atol=2e-3)
    assert (results["on"] - results["off"]).abs().max() > 1e-2


@pytest.mark.slow
def test_the_plugin_schedule_runs(make_engine, tiny_checkpoint, run_graph) -> None:
    engine = make_engine(nodegraph_sdk_demo, Keep, config=tiny_checkpoint.config)
    run_graph(engine, _graph(tiny_checkpoint.name, 0.5, scheduler="cosine"))
    assert torch.isfinite(Keep.KEPT["keep"]).all()


def test_a_real_server_lists_the_plugin_sampler(make_engine, nodegraph_server) -> None:
    url = nodegraph_server(make_engine(nodegraph_sdk_demo))
    with urllib.request.urlopen(f"{url}/object_info/KSampler", timeout=30) as response:
        info = json.loads(response.read())
    assert "hinted_euler" in info["KSampler"]["input"]["required"]["sampler_name"][0]
    with urllib.request.urlopen(f"{url}/object_info/RegionHint", timeout=30) as response:
        assert json.loads(response.read())["RegionHint"]["python_module"].startswith("nodegraph_sdk_demo")
