"""ComfyUI's sampler option nodes (SamplerEulerAncestral, SamplerDPMPP_2M_SDE, …) and the model-free schedules
(LaplaceScheduler, VPScheduler, ManualSigmas, ExtendIntermediateSigmas, SamplingPercentToSigma) on the tiny model.

Each option node at its defaults samples exactly what KSamplerSelect's sampler of that name samples, and its options
reach the sampler (a setting that turns one sampler into another gives that other's latents)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from graphs import make_engine, run

from nodegraph.diffusion.sigmas import training_sigmas

STEPS, CFG, SEED, SIZE = 4, 5.0, 7, 32


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


@pytest.fixture(scope="module")
def model(tiny_sd):
    from nodegraph.diffusion.loading import load_checkpoint

    return load_checkpoint(tiny_sd.folder, tiny_sd.config).model


def _base(scheduler: str = "karras") -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red circle"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blue"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                          "negative": ["neg", 0], "cfg": CFG}},
        "sched": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": scheduler,
                                                              "steps": STEPS, "denoise": 1.0}},
    }


def _branch(wf: dict, name: str, cls: str, inputs: dict) -> None:
    """A SamplerCustomAdvanced run with the SAMPLER of ``cls``; its latent is captured as ``c_<name>``."""
    wf["s_" + name] = {"class_type": cls, "inputs": inputs}
    wf["run_" + name] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["s_" + name, 0], "sigmas": ["sched", 0],
        "latent_image": ["empty", 0]}}
    wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": ["run_" + name, 0]}}


def _select(wf: dict, name: str) -> None:
    _branch(wf, "ref_" + name, "KSamplerSelect", {"sampler_name": name})


def _captured(engine, wf: dict) -> dict:
    result, cap = run(engine, wf)
    result.raise_for_status()
    return {k[2:]: (v["samples"] if isinstance(v, dict) else v) for k, v in cap.items()}


ONE = {"eta": 1.0, "s_noise": 1.0}


@pytest.mark.slow
def test_option_nodes_at_defaults_equal_the_named_samplers(engine):
    wf = _base()
    cases = {
        "euler_ancestral": ("SamplerEulerAncestral", ONE),
        "euler_ancestral_cfg_pp": ("SamplerEulerAncestralCFGPP", ONE),
        "lms": ("SamplerLMS", {"order": 4}),
        "dpmpp_2m_sde": ("SamplerDPMPP_2M_SDE", {"solver_type": "midpoint", **ONE, "noise_device": "cpu"}),
        "dpmpp_2m_sde_heun_gpu": ("SamplerDPMPP_2M_SDE", {"solver_type": "heun", **ONE, "noise_device": "gpu"}),
        "dpmpp_3m_sde": ("SamplerDPMPP_3M_SDE", {**ONE, "noise_device": "cpu"}),
        "dpmpp_sde_gpu": ("SamplerDPMPP_SDE", {**ONE, "r": 0.5, "noise_device": "gpu"}),
        "dpmpp_2s_ancestral": ("SamplerDPMPP_2S_Ancestral", ONE),
        "er_sde": ("SamplerER_SDE", {"solver_type": "ER-SDE", "max_stage": 3, **ONE}),
        "seeds_2": ("SamplerSEEDS2", {"solver_type": "phi_1", **ONE, "r": 0.5}),
        "sa_solver_pece": ("SamplerSASolver", {"model": ["ckpt", 0], "eta": 1.0, "sde_start_percent": 0.2,
                                               "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                               "corrector_order": 4, "use_pece": True, "simple_order_2": False}),
        "dpm_adaptive": ("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                                  "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
                                                  "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}),
    }
    for name, (cls, inputs) in cases.items():
        _branch(wf, name, cls, inputs)
        _select(wf, name)
    cap = _captured(engine, wf)
    for name in cases:
        ours, ref = cap[name], cap["ref_" + name]
        assert torch.isfinite(ours).all(), name
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())), name


@pytest.mark.slow
def test_options_reach_the_sampler(engine):
    """Settings that turn one sampler into another: eta 0 makes ancestral Euler plain Euler; SEEDS-2 with phi_2,
    r 1, eta 0 is exp_heun_2_x0; the reverse-time ER-SDE with eta 0 is deterministic (no seed dependence);
    s_noise changes an SDE sampler's result; LMS order 1 is Euler."""
    wf = _base()
    _branch(wf, "anc0", "SamplerEulerAncestral", {"eta": 0.0, "s_noise": 1.0})
    _select(wf, "euler")
    _branch(wf, "lms1", "SamplerLMS", {"order": 1})
    _branch(wf, "heun", "SamplerSEEDS2", {"solver_type": "phi_2", "eta": 0.0, "s_noise": 1.0, "r": 1.0})
    _select(wf, "exp_heun_2_x0")
    _branch(wf, "sde_half", "SamplerDPMPP_2M_SDE", {"solver_type": "midpoint", "eta": 1.0, "s_noise": 0.5,
                                                     "noise_device": "cpu"})
    _select(wf, "dpmpp_2m_sde")
    _branch(wf, "ode", "SamplerER_SDE", {"solver_type": "ODE", "max_stage": 3, **ONE})
    _branch(wf, "rev0", "SamplerER_SDE", {"solver_type": "Reverse-time SDE", "max_stage": 3, "eta": 0.0,
                                          "s_noise": 1.0})
    _branch(wf, "rev1", "SamplerER_SDE", {"solver_type": "Reverse-time SDE", "max_stage": 3, **ONE})
    _branch(wf, "adapt_anc", "SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                                      "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
                                                      "accept_safety": 0.81, "eta": 1.0, "s_noise": 1.0})
    _select(wf, "dpm_adaptive")
    cap = _captured(engine, wf)
    scale = float(cap["ref_euler"].abs().max())
    assert torch.allclose(cap["anc0"], cap["ref_euler"], atol=1e-5 * scale)
    assert torch.allclose(cap["lms1"], cap["ref_euler"], atol=1e-5 * scale)
    assert torch.allclose(cap["heun"], cap["ref_exp_heun_2_x0"], atol=1e-5 * scale)
    assert not torch.allclose(cap["sde_half"], cap["ref_dpmpp_2m_sde"], atol=1e-3 * scale)
    assert torch.allclose(cap["ode"], cap["rev0"], atol=1e-6 * scale)
    assert not torch.allclose(cap["rev1"], cap["ode"], atol=1e-3 * scale)
    assert not torch.allclose(cap["adapt_anc"], cap["ref_dpm_adaptive"], atol=1e-3 * scale)
    for value in cap.values():
        assert torch.isfinite(value).all()


def test_sa_solver_refuses_simple_order_2(engine):
    wf = _base()
    _branch(wf, "sa", "SamplerSASolver", {"model": ["ckpt", 0], "eta": 1.0, "sde_start_percent": 0.2,
                                          "sde_end_percent": 0.8, "s_noise": 1.0, "predictor_order": 3,
                                          "corrector_order": 4, "use_pece": False, "simple_order_2": True})
    result, _ = run(engine, wf)
    assert result.error is not None and "simple_order_2" in str(result.error)


def test_schedules_match_the_formulas(engine, model):
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}}
    nodes = {
        "laplace": ("LaplaceScheduler", {"steps": 5, "sigma_max": 14.614642, "sigma_min": 0.0291675, "mu": 0.0,
                                         "beta": 0.5}),
        "vp": ("VPScheduler", {"steps": 5, "beta_d": 19.9, "beta_min": 0.1, "eps_s": 0.001}),
        "manual": ("ManualSigmas", {"sigmas": "14.6, 7,3.5 1 .5 0"}),
        "p0": ("SamplingPercentToSigma", {"model": ["ckpt", 0], "sampling_percent": 0.0, "return_actual_sigma": False}),
        "p0a": ("SamplingPercentToSigma", {"model": ["ckpt", 0], "sampling_percent": 0.0, "return_actual_sigma": True}),
        "p1a": ("SamplingPercentToSigma", {"model": ["ckpt", 0], "sampling_percent": 1.0, "return_actual_sigma": True}),
        "p1": ("SamplingPercentToSigma", {"model": ["ckpt", 0], "sampling_percent": 1.0, "return_actual_sigma": False}),
        "p25": ("SamplingPercentToSigma", {"model": ["ckpt", 0], "sampling_percent": 0.25,
                                           "return_actual_sigma": False}),
    }
    for name, (cls, inputs) in nodes.items():
        wf[name] = {"class_type": cls, "inputs": inputs}
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    cap = _captured(engine, wf)
    # Laplace quantiles of an even ramp in log sigma (mu 0, beta 0.5), clamped to the range.
    ramp = np.linspace(0, 1, 5)
    lam = -0.5 * np.sign(0.5 - ramp) * np.log(1 - 2 * np.abs(0.5 - ramp) + 1e-5)
    expect = np.exp(np.clip(lam, math.log(0.0291675), math.log(14.614642)))
    assert np.allclose(cap["laplace"].numpy(), [*expect, 0.0], rtol=1e-5)
    t = np.linspace(1, 0.001, 5)
    # float32 like ComfyUI's: e^x - 1 loses digits for the smallest level (x ~ 1e-4), hence 1e-3 there.
    assert np.allclose(cap["vp"].numpy(), [*np.sqrt(np.exp(19.9 * t ** 2 / 2 + 0.1 * t) - 1), 0.0], rtol=1e-3)
    assert np.allclose(cap["vp"][:-2].numpy(), np.sqrt(np.exp(19.9 * t ** 2 / 2 + 0.1 * t) - 1)[:-1], rtol=1e-5)
    assert cap["manual"].tolist() == pytest.approx([14.6, 7.0, 3.5, 1.0, 0.5, 0.0])
    train = training_sigmas(model)
    assert cap["p0"] == pytest.approx(999999999.9) and cap["p1"] == 0.0
    assert cap["p0a"] == pytest.approx(float(train[-1])) and cap["p1a"] == pytest.approx(float(train[0]))
    # 25% of the way: timestep 0.75 * 999 = 749.25, between entries 749 and 750 in log sigma.
    w = 0.25
    expect_25 = math.exp((1 - w) * math.log(train[749]) + w * math.log(train[750]))
    assert cap["p25"] == pytest.approx(expect_25, rel=1e-6)


def test_extend_intermediate_sigmas_and_empty_manual(engine):
    from nodegraph.diffusion import sigmas as s

    sig = torch.tensor([14.0, 10.0, 4.0, 1.0, 0.0])
    # steps 2: one level inserted in each step starting in [end_at_sigma, start_at_sigma].
    out = s.extend_intermediate(sig, 2, -1.0, 4.0, "linear")
    assert out.tolist() == pytest.approx([14.0, 12.0, 10.0, 7.0, 4.0, 2.5, 1.0, 0.0])
    out = s.extend_intermediate(sig, 3, 12.0, 0.0, "cosine")  # 14 is above start_at_sigma: not extended
    f1, f2 = math.sin(math.pi / 6), math.sin(math.pi / 3)
    assert out[:2].tolist() == [14.0, 10.0]
    assert out[2:4].tolist() == pytest.approx([10 - 6 * f1, 10 - 6 * f2])
    assert out[-3:].tolist() == pytest.approx([1 - f1, 1 - f2, 0.0])
    out = s.extend_intermediate(sig, 2, -1.0, 0.0, "sine")
    assert out[1] == pytest.approx(14 - 4 * (1 - math.cos(math.pi / 4)))
    assert s.extend_intermediate(torch.zeros(0), 2, -1.0, 0.0, "linear").numel() == 0
    with pytest.raises(ValueError, match="spacing"):
        s.extend_intermediate(sig, 2, -1.0, 0.0, "cubic")
    wf = {"m": {"class_type": "ManualSigmas", "inputs": {"sigmas": "none"}},
          "c": {"class_type": "Capture", "inputs": {"value": ["m", 0]}}}
    result, _ = run(engine, wf)
    assert result.error is not None and "sigmas" in str(result.error)
