"""The sampler × scheduler table: every pair runs (2 steps on the tiny UNet) or is refused at validation, and the
schedules diffusers runs are ComfyUI's."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph.diffusion import schedulers as S
from nodegraph.validation import ValidationReport

SD_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
             "set_alpha_to_one": False, "skip_prk_steps": True, "_class_name": "PNDMScheduler"}
SUPPORTED = [pair for pair, entry in S.PAIRS.items() if isinstance(entry, S.Plan)]
REFUSED = [pair for pair, entry in S.PAIRS.items() if isinstance(entry, str)]


def test_table_covers_every_pair_and_refusals_say_what_works():
    assert set(S.PAIRS) == {(a, b) for a in S.SAMPLERS for b in S.SCHEDULER_NAMES}
    for name in ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
                 "dpmpp_sde", "ddim", "ddpm", "uni_pc", "uni_pc_bh2", "deis", "lcm", "dpmpp_3m_sde", "sa_solver"):
        assert name in S.SAMPLER_NAMES
    for name in ("normal", "karras", "exponential", "simple", "sgm_uniform", "beta", "ddim_uniform",
                 "linear_quadratic", "kl_optimal"):
        assert name in S.SCHEDULER_NAMES
    assert REFUSED and len(SUPPORTED) > 100
    for sampler, scheduler in REFUSED:  # diffusers cannot express these: they run on the k-diffusion samplers
        message = S.PAIRS[(sampler, scheduler)]
        assert f"'{sampler}'" in message and f"'{scheduler}'" in message
        assert S.route(sampler, scheduler) is None and S.unsupported_pair(sampler, scheduler) is None
    assert S.unsupported_pair("dpmpp_2s_ancestral", "normal") is None  # no diffusers class: k-diffusion form
    with pytest.raises(ValueError, match="unknown scheduler 'nonsense'"):
        S.plan_for("ddim", "nonsense")


def _step_timesteps(sched, spec):
    """The timestep each step starts from (order-2 classes interleave extra evaluations)."""
    train = S.training_sigmas(sched.alphas_cumprod.numpy())
    if spec.space == "k":
        sig = sched.sigmas.numpy().astype(np.float64)
        sig = sig[np.concatenate([[True], sig[1:] != sig[:-1]])]
        return S.sigma_to_t(sig[sig > 0], train)
    return sched.timesteps.numpy().astype(np.float64)


@pytest.mark.parametrize("steps", [20, 8, 3, 1])
def test_schedules_are_comfyuis_within_one_timestep(steps):
    worst = {}
    for sampler, scheduler in SUPPORTED:
        sched = S.build_scheduler(sampler, scheduler, SD_CONFIG, steps)
        acp = sched.alphas_cumprod.numpy()
        ref = S.sigma_to_t(S.reference_sigmas(scheduler, steps, acp)[:-1], S.training_sigmas(acp))
        ours = _step_timesteps(sched, S.SAMPLERS[sampler])
        assert len(ours) == len(ref) == steps, (sampler, scheduler)
        worst[(sampler, scheduler)] = float(np.abs(ours - ref).max())
    assert max(worst.values()) <= 1.0, {k: v for k, v in worst.items() if v > 1.0}
    # exact where the class takes the schedule as it is (fractional timesteps)
    for pair in (("euler", "beta"), ("euler", "kl_optimal"), ("heun", "linear_quadratic"), ("lms", "beta"),
                 ("euler_ancestral", "karras"), ("euler", "karras"), ("dpm_2", "exponential")):
        assert worst[pair] < 0.05, (pair, worst[pair])


def test_reference_schedules_shape():
    acp = S.build_scheduler("euler", "normal", SD_CONFIG, 4).alphas_cumprod.numpy()
    train = S.training_sigmas(acp)
    for name in S.SCHEDULER_NAMES:
        sig = S.reference_sigmas(name, 10, acp)
        assert sig[-1] == 0.0 and len(sig) == 11, name
        assert np.all(np.diff(sig) < 0), name
        assert sig[0] <= train[-1] * (1 + 1e-6), name
    karras = S.reference_sigmas("karras", 10, acp)
    assert karras[0] == pytest.approx(train[-1]) and karras[-2] == pytest.approx(train[0])


def test_override_reproduces_the_class_own_schedule():
    """Replacing timesteps/sigmas after set_timesteps behaves exactly like the class's own schedule."""
    import diffusers

    for sampler in ("uni_pc", "deis", "sa_solver", "euler_ancestral", "lms"):
        spec = S.SAMPLERS[sampler]
        cls = getattr(diffusers, spec.cls)
        config = dict(SD_CONFIG, **spec.options, timestep_spacing="trailing")
        native, patched = cls.from_config(config), cls.from_config(config)
        native.set_timesteps(5)
        S.override_schedule(patched, native.timesteps.clone(), native.sigmas.clone(), keep_last=spec.space == "vp")
        takes_generator = "generator" in inspect.signature(cls.step).parameters
        gen = torch.Generator().manual_seed(0)
        xa = xb = torch.randn(1, 4, 4, 4, generator=gen)
        for t in native.timesteps:
            out = torch.randn(1, 4, 4, 4, generator=gen)
            kw_a = {"generator": torch.Generator().manual_seed(1)} if takes_generator else {}
            kw_b = {"generator": torch.Generator().manual_seed(1)} if takes_generator else {}
            xa = native.step(out, t, native.scale_model_input(xa, t), **kw_a).prev_sample
            xb = patched.step(out, t, patched.scale_model_input(xb, t), **kw_b).prev_sample
        assert torch.equal(xa, xb), sampler


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def test_every_pair_runs_two_steps(engine):
    """Every (sampler, scheduler) pair of the diffusers table runs: on diffusers where it is faithful, else on the
    k-diffusion samplers; nothing is refused any more."""
    ran, refused = [], []
    for (sampler, scheduler) in S.PAIRS:
        wf = txt2img(sampler=sampler, scheduler=scheduler, steps=2, width=16, height=16, seed=5)
        for k in ("dec", "img"):
            del wf[k]
        try:
            result, cap = run(engine, wf)
        except ValidationReport as report:
            errors = report.node_errors["ks"]["errors"]
            assert errors[0]["type"] == "custom_validation_failed"
            assert f"'{sampler}'" in errors[0]["message"]
            refused.append((sampler, scheduler))
            continue
        assert result.status == "success", (sampler, scheduler, result.error)
        out = cap["lat"]["samples"]
        assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all() and out.abs().max() > 0
        ran.append((sampler, scheduler))
    assert sorted(ran) == sorted(S.PAIRS) and not refused
