"""Seeing diffusion: forward noising is the scheduler's add_noise (checked by hand), and the plot/trajectory nodes
produce images of the sizes they state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nodegraph.node import Node
from nodegraph.inputs import Output
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.training.explain import forward_noise, parse_timesteps, sampling_sigmas, schedule_curves
from nodegraph.training.plots import grid, line_plot

EMBEDDED = Path(__file__).resolve().parents[2] / "nodegraph" / "embedded" / "shapes-v1"


def _scheduler_config() -> dict:
    return json.loads((EMBEDDED / "scheduler" / "scheduler_config.json").read_text())


def test_forward_noise_is_sqrt_alphabar_mix_by_hand():
    config = _scheduler_config()
    betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    gen = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    ts = [0, 1, 500, 999]
    got = forward_noise(clean, noise, ts, config)
    assert got.shape == (8, 4, 8, 8)
    for k, t in enumerate(ts):
        want = np.sqrt(abar[t]) * clean.double().numpy() + np.sqrt(1 - abar[t]) * noise.double().numpy()
        np.testing.assert_allclose(got[2 * k:2 * k + 2].double().numpy(), want, atol=2e-6)
    curves = schedule_curves(config)
    np.testing.assert_allclose(curves["alphas_cumprod"], abar, rtol=1e-5)
    np.testing.assert_allclose(curves["snr"], abar / (1 - abar), rtol=1e-4)
    with pytest.raises(ValueError, match="outside 0…999"):
        forward_noise(clean, noise, [1000], config)


def test_parse_timesteps():
    assert parse_timesteps("0, 250,500") == [0, 250, 500]
    assert parse_timesteps("0-999/4") == [0, 333, 666, 999]
    with pytest.raises(ValueError, match="integers separated by commas"):
        parse_timesteps("zero")


def test_sampling_sigmas_follow_the_scheduler_choice():
    config = _scheduler_config()
    normal = sampling_sigmas("euler", "normal", config, 10)
    karras = sampling_sigmas("euler", "karras", config, 10)
    assert len(normal) == len(karras) == 11 and normal[-1] == karras[-1] == 0
    assert not np.allclose(normal, karras)
    ddim = sampling_sigmas("ddim", "normal", config, 10)
    assert len(ddim) == 11 and ddim[0] > ddim[-2] > 0


def test_line_plot_and_grid_sizes():
    img = line_plot({"a": [3, 2, 1], "b": [1, float("nan"), 0.5]}, 300, 200, title="t", log_y=True)
    assert img.shape == (200, 300, 3) and img.dtype == np.uint8 and (img < 250).any()
    tiles = np.zeros((5, 4, 6, 3), np.uint8)
    assert grid(tiles, 2).shape == (12, 12, 3)
    with pytest.raises(ValueError, match="64×64"):
        line_plot({"a": [1]}, 10, 10)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return capture_engine(tiny_checkpoint.config)


def _ckpt() -> dict:
    return {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
            "img": {"class_type": "ShapeImage", "inputs": {"shape": "circle", "color": "red", "background": "blue",
                                                           "size": 32, "center_x": 0.5, "center_y": 0.5,
                                                           "radius": 0.3}}}


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_add_noise_at_timestep_node(engine, space):
    wf = _ckpt()
    wf["noise"] = {"class_type": "AddNoiseAtTimestep", "inputs": {
        "image": ["img", 0], "vae": ["ckpt", 2], "model": ["ckpt", 0], "timesteps": "0, 500, 999", "seed": 1,
        "space": space}}
    wf["noisy"] = {"class_type": "Capture", "inputs": {"value": ["noise", 0]}}
    wf["grid"] = {"class_type": "Capture", "inputs": {"value": ["noise", 1]}}
    wf["orig"] = {"class_type": "Capture", "inputs": {"value": ["img", 0]}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    assert cap["noisy"].shape == (3, 32, 32, 3) and cap["grid"].shape == (1, 32, 96, 3)
    if space == "pixel":  # t=0 keeps the image (ᾱ_0 ≈ 0.9991); t=999 is nearly pure noise
        assert (cap["noisy"][0] - cap["orig"][0]).abs().mean() < 0.02
        assert (cap["noisy"][2] - cap["orig"][0]).abs().mean() > 0.2


def test_add_noise_rejects_bad_timesteps(engine):
    from nodegraph.validation import ValidationReport

    wf = _ckpt()
    wf["noise"] = {"class_type": "AddNoiseAtTimestep", "inputs": {
        "image": ["img", 0], "vae": ["ckpt", 2], "model": ["ckpt", 0], "timesteps": "soon", "seed": 1,
        "space": "latent"}}
    wf["out"] = {"class_type": "Capture", "inputs": {"value": ["noise", 0]}}
    with pytest.raises(ValidationReport) as info:
        engine.prepare(wf)
    assert "integers separated by commas" in str(info.value.render())


def test_schedule_plot_and_trajectory_sizes(engine):
    wf = _ckpt()
    wf["plot"] = {"class_type": "NoiseSchedulePlot", "inputs": {
        "model": ["ckpt", 0], "quantity": "all", "sampler_name": "euler", "scheduler": "karras", "steps": 8,
        "width": 320, "height": 256}}
    wf["plot2"] = {"class_type": "NoiseSchedulePlot", "inputs": {
        "model": ["ckpt", 0], "quantity": "sigmas", "sampler_name": "euler", "scheduler": "normal", "steps": 8,
        "width": 200, "height": 136}}
    wf["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}}
    wf["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}}
    wf["empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 2}}
    wf["traj"] = {"class_type": "DenoiseTrajectory", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "vae": ["ckpt", 2], "seed": 3, "steps": 4, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
        "every": 2, "grid": True}}
    for name, (node, idx) in {"p1": ("plot", 0), "p2": ("plot2", 0), "x0": ("traj", 0), "lat": ("traj", 1),
                              "g": ("traj", 2)}.items():
        wf[name] = {"class_type": "Capture", "inputs": {"value": [node, idx]}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    assert cap["p1"].shape == (1, 256, 320, 3) and cap["p2"].shape == (1, 136, 200, 3)
    assert cap["x0"].shape == (4, 32, 32, 3) and cap["lat"].shape == (4, 32, 32, 3)  # 2 kept steps × batch 2
    assert cap["g"].shape == (1, 4 * 32, 2 * 32, 3)  # per item: a latents row and an x0 row, a column per step
    assert not torch.equal(cap["x0"][0], cap["x0"][2])  # the guess changes between steps


class LossFixture(Node):
    """A LOSS_MAP without training."""

    INPUTS = {}
    OUTPUTS = (Output("LOSS_MAP"),)

    def execute(self, ctx):
        return ({"loss": [1.0 / (1 + i) for i in range(40)]},)


def test_loss_graph_node_size(tiny_checkpoint):
    from PIL import Image

    engine = capture_engine(tiny_checkpoint.config, (LossFixture,))
    wf = {"src": {"class_type": "LossFixture", "inputs": {}},
          "loss": {"class_type": "LossGraphNode", "inputs": {"loss": ["src", 0], "filename_prefix": "lg"}}}
    result, _ = run_captured(engine, wf)
    result.raise_for_status()
    (entry,) = result.outputs["loss"]["images"]
    assert entry["type"] == "temp" and entry["filename"].startswith("lg")
    path = tiny_checkpoint.config.folder_for("temp") / entry.get("subfolder", "") / entry["filename"]
    with Image.open(path) as img:
        assert img.size == (840, 520)
