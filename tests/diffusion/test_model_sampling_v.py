"""ModelSamplingContinuousV: the UNet called at atan(sigma)·2/π on x/sqrt(sigma² + 1), x0 read from v; ComfyUI's
schedules over its log-spaced table, "normal"/"sgm_uniform" linear in that time (not in ln sigma); a graph run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph._tiny import TEXT_HIDDEN
from nodegraph.diffusion.custom import KDenoiser, SamplerRegistry
from nodegraph.diffusion.model_sampling import continuous_config, sigma_table
from nodegraph.diffusion.sampling import _conds
from nodegraph.diffusion.schedulers import comfy_sigmas
from nodegraph.diffusion.sigmas import model_schedule, percent_to_sigma

SMAX, SMIN = 500.0, 0.03


@pytest.fixture(scope="module")
def model(tiny_sd):
    from nodegraph.diffusion.loading import load_checkpoint

    return load_checkpoint(tiny_sd.folder, tiny_sd.config).model


@pytest.fixture(scope="module")
def patched(model):
    return dataclasses.replace(model, scheduler_config=continuous_config(model.scheduler_config, "v_prediction",
                                                                         SMIN, SMAX, "v"))


def _comfy_normal(steps: int, sgm: bool = False) -> np.ndarray:
    """ComfyUI's normal_scheduler written out for ModelSamplingContinuousV: times linear between atan(sigma_max)·2/π
    and atan(sigma_min)·2/π, sigma = tan(t·π/2), then 0."""
    start, end = math.atan(SMAX) * 2 / math.pi, math.atan(SMIN) * 2 / math.pi
    ts = np.linspace(start, end, steps + 1)[:-1] if sgm else np.linspace(start, end, steps)
    return np.append(np.tan(ts * math.pi / 2), 0.0)


def test_denoiser_by_hand(model, patched):
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(1, 77, TEXT_HIDDEN, generator=g)
    pos = [(emb, {})]
    x = torch.randn(1, 4, 8, 8, generator=g)
    conds = _conds(model, pos, 1, (64, 64), "cpu", torch.float32, "positive")
    for sigma in (3.7, 120.0):
        with torch.no_grad():
            v = model.unet(x / math.sqrt(sigma ** 2 + 1), torch.tensor(math.atan(sigma) * 2 / math.pi),
                           encoder_hidden_states=emb).sample
            got = KDenoiser(patched, conds, [], pos, 1.0, torch.float32)(x, sigma)
        expected = x / (sigma ** 2 + 1) - v * sigma / math.sqrt(sigma ** 2 + 1)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_schedules_follow_comfyui(patched):
    table = sigma_table(patched.scheduler_config)
    assert len(table) == 1000 and table[0] == pytest.approx(SMIN) and table[-1] == pytest.approx(SMAX)
    np.testing.assert_allclose(np.diff(np.log(table)), math.log(SMAX / SMIN) / 999, rtol=1e-9)  # log-spaced
    for steps in (1, 5, 9):
        normal = model_schedule(patched, "normal", steps, 1.0, SamplerRegistry()).double().numpy()
        np.testing.assert_allclose(normal, _comfy_normal(steps), rtol=1e-5)
    sgm = model_schedule(patched, "sgm_uniform", 6, 1.0, SamplerRegistry()).double().numpy()
    np.testing.assert_allclose(sgm, _comfy_normal(6, sgm=True), rtol=1e-5)
    # not the log-linear schedule the EDM time gives over the same table
    assert not np.allclose(_comfy_normal(5)[:-1], np.exp(np.linspace(math.log(SMAX), math.log(SMIN), 5)), rtol=1e-2)
    # the config-mapping entry (BasicScheduler of a plugin registry, denoise tails) agrees
    np.testing.assert_allclose(comfy_sigmas("normal", 4, patched.scheduler_config, 0.5), _comfy_normal(8)[-5:],
                               rtol=1e-9)
    karras = model_schedule(patched, "karras", 5, 1.0, SamplerRegistry()).double().numpy()
    ramp = np.linspace(0, 1, 5)
    np.testing.assert_allclose(karras[:-1], (SMAX ** (1 / 7) + ramp * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7,
                               rtol=1e-5)
    simple = model_schedule(patched, "simple", 4, 1.0, SamplerRegistry()).double().numpy()
    np.testing.assert_allclose(simple[:-1], [table[-(1 + int(i * 250))] for i in range(4)], rtol=1e-6)
    # percent_to_sigma stays ContinuousEDM's (log-linear), as ComfyUI's ContinuousV inherits it
    assert percent_to_sigma(patched, 0.5) == pytest.approx(math.exp((math.log(SMAX) + math.log(SMIN)) / 2), rel=1e-3)


def test_only_v_prediction(model):
    with pytest.raises(ValueError, match="v_prediction"):
        continuous_config(model.scheduler_config, "edm", SMIN, SMAX, "v")


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _latent(engine, wf):
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
    result, captured = run(engine, wf)
    result.raise_for_status()
    return captured["lat"]["samples"]


def _graph(sampling_node: dict | None) -> dict:
    wf = txt2img(steps=3, width=64, height=64)
    if sampling_node is not None:
        wf["ms"] = sampling_node
        wf["ks"]["inputs"]["model"] = ["ms", 0]
    return wf


def test_node_samples(engine):
    node = {"class_type": "ModelSamplingContinuousV",
            "inputs": {"model": ["ckpt", 0], "sampling": "v_prediction", "sigma_max": SMAX, "sigma_min": SMIN}}
    v = _latent(engine, _graph(node))
    base = _latent(engine, _graph(None))
    edm = _latent(engine, _graph({"class_type": "ModelSamplingContinuousEDM",
                                  "inputs": dict(node["inputs"])}))
    assert torch.isfinite(v).all()
    assert (v - base).abs().max() > 1e-3 and (v - edm).abs().max() > 1e-3  # its own time, not EDM's
    node["inputs"]["sigma_min"] = SMAX + 1
    result, _ = run(engine, _graph(node))
    assert result.status == "error" and "sigma_min" in str(result.error)
