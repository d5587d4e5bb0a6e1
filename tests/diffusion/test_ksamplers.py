"""ComfyUI's whole sampler list through KSampler on the tiny SD model: every name runs with a couple of schedulers,
is deterministic for a seed, routes to diffusers where a faithful plan exists and to the k-diffusion-convention
samplers otherwise; k-euler matches diffusers' euler; every (sampler, scheduler) pair validates."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph.diffusion import custom
from nodegraph.diffusion import schedulers as S
from nodegraph.diffusion.ksamplers import KSAMPLERS, k_sampler

SD_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
             "set_alpha_to_one": False, "skip_prk_steps": True, "_class_name": "PNDMScheduler"}


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _latent(engine, sampler: str, scheduler: str, seed: int = 5, steps: int = 3) -> torch.Tensor:
    wf = txt2img(sampler=sampler, scheduler=scheduler, steps=steps, width=16, height=16, seed=seed, cfg=4.0)
    for k in ("dec", "img"):
        del wf[k]
    result, cap = run(engine, wf)
    assert result.status == "success", (sampler, scheduler, result.error)
    return cap["lat"]["samples"]


def test_names_are_comfyuis_in_its_order_and_every_pair_validates():
    assert len(S.SAMPLER_NAMES) == 44 and S.SAMPLER_NAMES[:4] == ("euler", "euler_cfg_pp", "euler_ancestral",
                                                                  "euler_ancestral_cfg_pp")
    assert S.SAMPLER_NAMES[-3:] == ("ddim", "uni_pc", "uni_pc_bh2")
    assert S.SCHEDULER_NAMES == ("simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                                 "linear_quadratic", "kl_optimal")
    assert tuple(KSAMPLERS) == S.SAMPLER_NAMES and not S.NO_EQUIVALENT
    table = custom.SamplerRegistry()
    for a in S.SAMPLER_NAMES:
        for b in S.SCHEDULER_NAMES:
            assert table.unsupported_pair(a, b) is None, (a, b)
    assert "choose one of" in S.unsupported_pair("nope", "karras")
    assert "choose one of" in S.unsupported_pair("euler", "nope")
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        k_sampler("nope")
    assert table.function("dpmpp_2m") is KSAMPLERS["dpmpp_2m"]


def test_routing_keeps_diffusers_plans_and_sends_the_rest_to_k():
    # Faithful diffusers plans stay (their parity with diffusers pipelines is tested elsewhere) ...
    assert custom.k_route(None, "euler", "karras") is None
    assert S.route("dpmpp_2m", "karras") is not None
    # ... names and pairs without one run the k-diffusion-convention sampler.
    for sampler, scheduler in (("dpmpp_2s_ancestral", "normal"), ("ipndm", "karras"), ("euler_cfg_pp", "simple")):
        view = custom.k_route(None, sampler, scheduler)
        assert view is not None and view.samplers[sampler].fn is KSAMPLERS[sampler]
    refused = [pair for pair, entry in S.PAIRS.items() if isinstance(entry, str)]
    assert refused and all(custom.k_route(None, *pair) is not None for pair in refused)
    with pytest.raises(ValueError, match="k-diffusion"):
        S.plan_for("ipndm", "karras")


def test_comfy_sigmas_is_basic_scheduler():
    acp = S.alphas_cumprod_of(SD_CONFIG)
    full = S.reference_sigmas("karras", 10, acp)
    assert np.allclose(S.comfy_sigmas("karras", 10, SD_CONFIG), full)
    tail = S.comfy_sigmas("karras", 5, acp, denoise=0.5)
    assert len(tail) == 6 and np.allclose(tail, full[-6:])
    assert S.comfy_sigmas("normal", 4, acp, denoise=0.0).shape == (0,)
    assert np.allclose(custom.SamplerRegistry().schedule("simple", 4, SD_CONFIG), S.reference_sigmas("simple", 4, acp))
    # ComfyUI's karras over SD1.5's betas: sigma_max 14.6146, sigma_min 0.0292
    assert full[0] == pytest.approx(14.6146, abs=1e-3) and full[-2] == pytest.approx(0.0292, abs=1e-4)
    # dpm_2 and uni_pc: one step longer, the next-to-last sigma dropped (as ComfyUI's KSampler)
    view = custom.k_route(None, "dpm_2", "beta")
    assert view is not None and view.sigmas("karras", 4, acp).shape == (5,)
    longer = S.reference_sigmas("karras", 5, acp)
    assert np.allclose(view.sigmas("karras", 4, acp), np.append(longer[:-2], 0.0))


@pytest.mark.parametrize("scheduler", ["karras", "simple"])
def test_every_sampler_runs_through_ksampler_and_is_deterministic(engine, scheduler):
    started = time.perf_counter()
    for sampler in S.SAMPLER_NAMES:
        out = _latent(engine, sampler, scheduler)
        assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all() and out.abs().max() > 0, sampler
    for sampler in ("euler_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_3m_sde_gpu", "er_sde", "sa_solver_pece", "seeds_3",
                    "dpm_adaptive", "ipndm", "lcm"):
        a, b = _latent(engine, sampler, scheduler), _latent(engine, sampler, scheduler)
        assert torch.equal(a, b), sampler
        assert not torch.equal(a, _latent(engine, sampler, scheduler, seed=6)), sampler
    assert time.perf_counter() - started < 120


def test_k_euler_matches_diffusers_euler(engine):
    """The k-path (as a plugin or for a pair without a diffusers plan) and the diffusers path agree on Euler."""
    from nodegraph.diffusion.ksamplers import euler as keuler

    diffusers_out = _latent(engine, "euler", "karras", steps=6)
    # ddim runs ComfyUI's Euler; with karras diffusers' EulerDiscreteScheduler runs it. Force the k-path:
    original = S.PAIRS[("ddim", "karras")]
    try:
        S.PAIRS[("ddim", "karras")] = "forced onto the k-path for this test"
        k_out = _latent(engine, "ddim", "karras", steps=6)
    finally:
        S.PAIRS[("ddim", "karras")] = original
    assert KSAMPLERS["ddim"] is keuler.sample_euler
    diff = float((diffusers_out - k_out).abs().max())
    print(f"k-euler vs diffusers euler: max |diff| {diff:.2e}")
    assert diff < 2e-3, diff


def test_ksampler_advanced_split_on_the_k_path_equals_one_run(engine):
    """KSamplerAdvanced 0-2 with leftover noise then 2-4 without noise equals one 4-step run (a single-step
    k-only sampler, so no solver history is lost at the split)."""
    whole = _latent(engine, "euler_cfg_pp", "karras", steps=4)
    wf = txt2img(sampler="euler_cfg_pp", scheduler="karras", steps=4, width=16, height=16, seed=5, cfg=4.0)
    for k in ("dec", "img"):
        del wf[k]
    common = {k: wf["ks"]["inputs"][k] for k in ("model", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                                  "negative")}
    wf["ks"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
        common, add_noise="enable", noise_seed=5, latent_image=["empty", 0], start_at_step=0, end_at_step=2,
        return_with_leftover_noise="enable")}
    wf["ks2"] = {"class_type": "KSamplerAdvanced", "inputs": dict(
        common, add_noise="disable", noise_seed=5, latent_image=["ks", 0], start_at_step=2, end_at_step=10000,
        return_with_leftover_noise="disable")}
    wf["lat"]["inputs"]["value"] = ["ks2", 0]
    result, cap = run(engine, wf)
    assert result.status == "success", result.error
    assert torch.allclose(cap["lat"]["samples"], whole, atol=1e-5), (cap["lat"]["samples"] - whole).abs().max()
