"""ModelComputeDtype: the MODEL computes in the chosen dtype in every sampling path (diffusers UNet path, k-path,
custom sampling), its weights untouched afterwards; fp16 that torch refuses falls back with a logged note."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph._tiny import TEXT_HIDDEN
from nodegraph.diffusion import guiders
from nodegraph.diffusion.devices import for_model
from nodegraph.diffusion.model_sampling import discrete_config, with_compute_dtype
from nodegraph.diffusion.sampling import SamplingOptions, sample


def _with(model, dtype):
    return dataclasses.replace(model, scheduler_config=with_compute_dtype(model.scheduler_config, dtype))


def _cond(seed):
    return [(torch.randn(1, 77, TEXT_HIDDEN, generator=torch.Generator().manual_seed(seed)), {})]


class _Seen:
    """The dtypes the UNet's first convolution computed in."""

    def __init__(self, unet):
        self.dtypes: set[torch.dtype] = set()
        self.handle = unet.conv_in.register_forward_hook(lambda m, a, out: self.dtypes.add(out.dtype))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _ksample(model, devices, sampler):
    opts = SamplingOptions(sampler, "normal", 2, 4.0, 3)
    return sample(model, _cond(1), _cond(2), {"samples": torch.zeros(1, 4, 8, 8)}, opts, devices)["samples"]


def test_view_of_the_device_policy(model, devices):
    assert for_model(devices, model) is devices
    assert for_model(devices, _with(model, "default")) is devices
    assert for_model(devices, _with(model, "fp32")) is devices  # the CPU engine computes in fp32 already
    view = for_model(devices, _with(model, "bf16"))
    assert view is not devices and view.dtype == torch.bfloat16 and view.cast == torch.bfloat16
    assert devices.dtype == torch.float32 and devices.cast is None  # the engine's policy is unchanged
    # the other model-sampling patches keep the choice
    kept = discrete_config(_with(model, "bf16").scheduler_config, "v_prediction", False)
    assert for_model(devices, dataclasses.replace(model, scheduler_config=kept)).dtype == torch.bfloat16


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m_sde_gpu"])  # diffusers plan; k-diffusion path
def test_bf16_in_ksampler_paths(model, devices, sampler):
    weight = model.unet.conv_in.weight.detach().clone()
    with _Seen(model.unet) as seen:
        base = _ksample(model, devices, sampler)
    assert seen.dtypes == {torch.float32}
    with _Seen(model.unet) as seen:
        low = _ksample(_with(model, "bf16"), devices, sampler)
    assert seen.dtypes == {torch.bfloat16}
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    diff = (low - base).abs().max().item()
    assert 0 < diff < 0.25 * base.abs().max().item()  # bf16 rounding, not another image
    assert model.unet.conv_in.weight.dtype == torch.float32 and torch.equal(model.unet.conv_in.weight, weight)


def test_bf16_in_custom_sampling(model, devices):
    from nodegraph.diffusion.ksamplers import k_sampler

    patched = _with(model, "bf16")
    guider = guiders.CFGGuider(patched, _cond(1), _cond(2), 4.0)
    sigmas = torch.tensor([14.6, 3.0, 0.0])
    noise = guiders.RandomNoise(5)
    with _Seen(model.unet) as seen:
        out, _ = guiders.sample_custom(guider, k_sampler("euler"), sigmas, noise,
                                       {"samples": torch.zeros(1, 4, 8, 8)}, devices)
    assert seen.dtypes == {torch.bfloat16} and torch.isfinite(out["samples"]).all()


def test_fp16_refused_falls_back_with_note(model, devices, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("no fp16 autocast here")

    monkeypatch.setattr(torch, "autocast", refuse)
    with caplog.at_level(logging.WARNING, logger="nodegraph.diffusion.devices"):
        assert for_model(devices, _with(model, "fp16")) is devices
    assert "fp16" in caplog.text and "float32 instead" in caplog.text


def test_node_in_a_graph(tiny_sd):
    engine = make_engine(tiny_sd.config)

    def latent(dtype):
        wf = txt2img(steps=2, width=64, height=64)
        if dtype is not None:
            wf["cd"] = {"class_type": "ModelComputeDtype", "inputs": {"model": ["ckpt", 0], "dtype": dtype}}
            wf["ks"]["inputs"]["model"] = ["cd", 0]
        wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
        result, captured = run(engine, wf)
        result.raise_for_status()
        return captured["lat"]["samples"]

    base = latent(None)
    assert torch.equal(latent("default"), base) and torch.equal(latent("fp32"), base)
    low = latent("bf16")
    assert 0 < (low - base).abs().max().item() < 0.25 * base.abs().max().item()


@pytest.mark.slow
def test_bf16_in_the_flow_loop(tmp_path):
    """The tiny Flux.1 (tests/families) through ModelComputeDtype: fp32 (the CPU engine's) changes nothing, bf16
    rounds the result a little."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))
    import family_kit as kit
    from flux_tiny import LAYOUTS, build
    from test_flux_parity import graph

    from nodegraph.testing_graphs import capture_engine

    engine = capture_engine(kit.home_config(build(tmp_path / "flux").home))

    def latent(dtype):
        wf = graph(LAYOUTS["comfyui"])
        if dtype is not None:
            wf["cd"] = kit.node("ModelComputeDtype", model=["msf", 0], dtype=dtype)
            wf["ks"]["inputs"]["model"] = ["cd", 0]
        return kit.run(engine, kit.add_captures(wf, lat="ks"))["lat"]["samples"]

    base = latent(None)
    assert torch.equal(latent("fp32"), base)
    low = latent("bf16")
    assert 0 < (low - base).abs().max().item() < 0.25 * base.abs().max().item()
