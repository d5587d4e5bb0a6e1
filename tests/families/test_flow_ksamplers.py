"""ComfyUI's ancestral and SDE samplers on flow-matching models (x = (1 - sigma) x0 + sigma * noise, ComfyUI's CONST).

- Single steps on a denoiser with a known x0 equal the update rules written out by hand from ComfyUI's maths
  (k_diffusion/sampling.py at v0.8.0: the _RF ancestral forms, the half log-SNR lambda = log((1 - sigma) / sigma)
  with alpha = 1 - sigma for the SDE solvers, the first sigma 1 moved to percent_to_sigma(1e-4)).
- On the exact denoiser of N(MU, S^2) data seen through a rectified flow, every stochastic sampler's samples have the
  data's mean and std (40 steps, linear schedule).
- The general half log-SNR code equals the variance-exploding code when given the variance-exploding form, and the
  samplers ComfyUI runs with variance-exploding maths on every model stay so.
- A tiny Flux graph runs KSampler with euler_ancestral and dpmpp_2m_sde; the images differ from euler's.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nodegraph.diffusion.flow.sampling import sampler_fn
from nodegraph.diffusion.ksamplers import KSAMPLERS, rf_ancestral, rf_sde, rf_seeds
from nodegraph.diffusion.ksamplers.forms import RectifiedFlow, VarianceExploding
from nodegraph.diffusion.ksamplers.noise import BrownianNoise

MU, S = 0.3, 0.5
FLOW = RectifiedFlow()


class Known:
    """A flow-model denoiser whose x0 estimate is C * (1 + sigma) whatever x; records the sigmas it is asked at."""

    noise_form = FLOW

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.states: list[torch.Tensor] = []

    def split(self, x, sigma):
        self.asked.append(float(sigma))
        self.states.append(x.clone())
        return C * (1.0 + float(sigma)), None

    def __call__(self, x, sigma):
        return self.split(x, sigma)[0]


C = torch.linspace(-1.0, 1.0, 16).reshape(1, 1, 4, 4)
X = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(11))


def _step(name: str, sigmas: list[float], den=None, seed: int = 1, **opts) -> torch.Tensor:
    den = den or Known()
    return KSAMPLERS[name](den, X.clone(), torch.tensor(sigmas, dtype=torch.float64), generator=torch.Generator().manual_seed(seed),
                           callback=None, **opts)


def _randn(seed: int = 1, count: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(X.shape), generator=gen) for _ in range(count)]


def _lam(s: float) -> float:
    return math.log((1 - s) / s)


def _close(a, b) -> None:
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), float((a - b).abs().max())


def test_euler_ancestral_rf_step_by_hand():
    s, t = 0.8, 0.6
    down = t * (1 + (t / s - 1))  # eta 1
    x = down / s * X + (1 - down / s) * C * (1 + s)
    renoise = math.sqrt(t * t - down * down * (1 - t) ** 2 / (1 - down) ** 2)
    expected = (1 - t) / (1 - down) * x + _randn()[0] * renoise
    _close(_step("euler_ancestral", [s, t]), expected)
    # eta 0.5 (SamplerEulerAncestral): sigma_down moves towards sigma_next
    down = t * (1 + (t / s - 1) * 0.5)
    x = down / s * X + (1 - down / s) * C * (1 + s)
    renoise = math.sqrt(t * t - down * down * (1 - t) ** 2 / (1 - down) ** 2)
    expected = (1 - t) / (1 - down) * x + _randn()[0] * (0.7 * renoise)
    _close(_step("euler_ancestral", [s, t], eta=0.5, s_noise=0.7), expected)


def test_dpmpp_2s_ancestral_rf_step_by_hand():
    s, t = 0.8, 0.6
    down = t * t / s
    mid = 1 / (1 + math.exp(_lam(s) + 0.5 * (_lam(down) - _lam(s))))
    den = Known()
    out = _step("dpmpp_2s_ancestral", [s, t], den)
    assert den.asked == [s, pytest.approx(mid, rel=1e-9)]
    x = down / s * X + (1 - down / s) * C * (1 + mid)
    renoise = math.sqrt(t * t - down * down * (1 - t) ** 2 / (1 - down) ** 2)
    _close(out, (1 - t) / (1 - down) * x + _randn()[0] * renoise)
    # from sigma 1 the intermediate point is 0.9999, as ComfyUI's
    den = Known()
    _step("dpmpp_2s_ancestral", [1.0, t], den)
    assert den.asked == [1.0, 0.9999]


def test_dpmpp_2m_sde_rf_two_steps_by_hand():
    sig = [0.8, 0.6, 0.3]
    tree = BrownianNoise(X, torch.tensor(sig, dtype=torch.float64), torch.Generator().manual_seed(1))
    x, old, h_last = X.clone(), None, 0.0
    for s, t in itertools.pairwise(sig):
        d = C * (1 + s)
        h = _lam(t) - _lam(s)
        x = t / s * math.exp(-h) * x + (1 - t) * (1 - math.exp(-2 * h)) * d
        if old is not None:
            x = x + 0.5 * (1 - t) * (1 - math.exp(-2 * h)) * (h / h_last) * (d - old)
        x = x + tree(s, t) * t * math.sqrt(1 - math.exp(-2 * h))
        old, h_last = d, h
    _close(_step("dpmpp_2m_sde", sig), x)


def test_dpmpp_sde_rf_step_by_hand():
    s, t = 0.8, 0.6
    tree = BrownianNoise(X, torch.tensor([s, t], dtype=torch.float64), torch.Generator().manual_seed(1))
    ls, lt = _lam(s), _lam(t)
    l1 = ls + 0.5 * (lt - ls)
    s1 = 1 / (1 + math.exp(l1))

    def ancestral(a, b):  # k-diffusion's split on e^-lambda (eta 1)
        up = math.sqrt(b * b * (a * a - b * b) / (a * a))
        return math.sqrt(b * b - up * up), up

    a_s, a_1, a_t = 1 - s, 1 - s1, 1 - t
    sd, su = ancestral(math.exp(-ls), math.exp(-l1))
    h_ = -math.log(sd) - ls
    x2 = a_1 / a_s * math.exp(-h_) * X - a_1 * math.expm1(-h_) * C * (1 + s) + a_1 * tree(s, s1) * su
    sd, su = ancestral(math.exp(-ls), math.exp(-lt))
    h_ = -math.log(sd) - ls
    mixed = C * (1 + s1)  # (1 - fac) x0 + fac x0_mid with fac 1: r = 1/2
    expected = a_t / a_s * math.exp(-h_) * X - a_t * math.expm1(-h_) * mixed + a_t * tree(s, t) * su
    den = Known()
    _close(_step("dpmpp_sde", [s, t], den), expected)
    assert den.asked == [s, pytest.approx(s1, rel=1e-9)]
    _close(den.states[1], x2)  # the intermediate stochastic state the model sees


def test_er_sde_rf_step_by_hand():
    s, t = 0.8, 0.6
    er_s, er_t = s / (1 - s), t / (1 - t)
    def phi(v: float) -> float:
        return v * (math.exp(v ** 0.3) + 10.0)

    r = phi(er_t) / phi(er_s)
    expected = ((1 - t) / (1 - s) * r * X + (1 - t) * (1 - r) * C * (1 + s)
                + (1 - t) * _randn()[0] * math.sqrt(er_t ** 2 - er_s ** 2 * r ** 2))
    _close(_step("er_sde", [s, t]), expected)


def test_lcm_and_euler_cfg_pp_rf_steps_by_hand():
    s, t = 0.8, 0.6
    _close(_step("lcm", [s, t]), t * _randn()[0] + (1 - t) * C * (1 + s))
    # CFG++ Euler (cfg 1: the unconditional x0 is the x0): x = alpha_t x0 + t (x - alpha_s x0) / s
    _close(_step("euler_cfg_pp", [s, t]), (1 - t) * C * (1 + s) + t * (X - (1 - s) * C * (1 + s)) / s)


def test_first_sigma_one_is_offset_for_the_log_snr_samplers():
    for name in ("dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "er_sde", "seeds_2", "sa_solver"):
        den = Known()
        out = _step(name, [1.0, 0.5, 0.0], den)
        assert den.asked[0] == pytest.approx(0.9999) and torch.isfinite(out).all(), (name, den.asked)
    shifted = RectifiedFlow(lambda p: 0.5)  # the model's percent_to_sigma decides the offset
    assert shifted.offset([1.0, 0.3]) == [0.5, 0.3]


class FlowGauss:
    """The exact denoiser of N(MU, S^2) data on a rectified flow: E[x0 | x] at every sigma."""

    noise_form = FLOW

    def __init__(self, declare: bool = True) -> None:
        if not declare:
            self.noise_form = None

    def split(self, x, sigma):
        a = 1.0 - float(sigma)
        return MU + a * S * S * (x - a * MU) / (a * a * S * S + float(sigma) ** 2), None

    def __call__(self, x, sigma):
        return self.split(x, sigma)[0]


#: The samplers ComfyUI runs in a rectified-flow form (everything stochastic it does not run with VE maths).
RF_STOCHASTIC = ["euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
                 "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "er_sde", "seeds_2", "seeds_3",
                 "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece"]
#: ComfyUI v0.8.0 runs these with their variance-exploding maths on every model (no CONST form).
VE_AS_COMFYUI = ["ddpm", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp"]


def _flow_moments(name: str, steps: int = 40, den=None, seed: int = 1) -> tuple[float, float]:
    noise = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    out = KSAMPLERS[name](den or FlowGauss(), noise, sigmas, generator=torch.Generator().manual_seed(seed),
                          callback=None)
    return float(out.mean()), float(out.std())


@pytest.mark.parametrize("name", RF_STOCHASTIC)
def test_stochastic_samplers_reproduce_the_data_on_a_flow_model(name):
    mean, std = _flow_moments(name)
    assert abs(mean - MU) < 0.02 and abs(std - S) < 0.06 * S, (mean, std)


def test_rf_forms_differ_from_the_variance_exploding_maths():
    """Without the declared form the same samplers run the VE maths, which miss the data on a flow model."""
    for name in ("euler_ancestral", "dpmpp_2m_sde", "er_sde"):
        assert _flow_moments(name) != _flow_moments(name, den=FlowGauss(declare=False)), name


def test_comfyui_ve_only_samplers_keep_their_maths_on_flow_models():
    for name in VE_AS_COMFYUI:
        assert _flow_moments(name) == _flow_moments(name, den=FlowGauss(declare=False)), name


def test_lcm_on_a_flow_follows_its_renoising_rule():
    """x' = sigma' n + (1 - sigma') x0(x): Var(x0) = (a S^2 / (a^2 S^2 + sigma^2))^2 Var(x), recursively."""
    sig = torch.linspace(1.0, 0.0, 41).tolist()
    var = 1.0
    for k, s in enumerate(sig[:-1]):
        a = 1 - s
        var_x0 = (a * S * S / (a * a * S * S + s * s)) ** 2 * var
        var = (1 - sig[k + 1]) ** 2 * var_x0 + sig[k + 1] ** 2
    mean, std = _flow_moments("lcm")
    assert abs(mean - MU) < 0.02 and abs(std - math.sqrt(var)) < 0.04 * math.sqrt(var), (std, math.sqrt(var))


class VEGauss:
    """The exact N(MU, S^2) denoiser of a variance-exploding model (x = x0 + sigma * noise)."""

    def split(self, x, sigma):
        return (S * S * x + float(sigma) ** 2 * MU) / (S * S + float(sigma) ** 2), None

    def __call__(self, x, sigma):
        return self.split(x, sigma)[0]


GENERAL = {
    "dpmpp_sde": lambda d, x, s, g: rf_sde.dpmpp_sde(d, x, s, VarianceExploding(), generator=g, callback=None),
    "dpmpp_2m_sde": lambda d, x, s, g: rf_sde.dpmpp_2m_sde(d, x, s, VarianceExploding(), generator=g, callback=None),
    "dpmpp_2m_sde_heun": lambda d, x, s, g: rf_sde.dpmpp_2m_sde(d, x, s, VarianceExploding(), generator=g,
                                                                callback=None, solver_type="heun"),
    "dpmpp_3m_sde": lambda d, x, s, g: rf_sde.dpmpp_3m_sde(d, x, s, VarianceExploding(), generator=g, callback=None),
    "seeds_2": lambda d, x, s, g: rf_seeds.seeds_2(d, x, s, VarianceExploding(), generator=g, callback=None),
    "seeds_3": lambda d, x, s, g: rf_seeds.seeds_3(d, x, s, VarianceExploding(), generator=g, callback=None),
    "euler_ancestral_cfg_pp": lambda d, x, s, g: rf_ancestral.euler_ancestral_cfg_pp(
        d, x, s, VarianceExploding(), generator=g, callback=None),
}


@pytest.mark.parametrize("name", sorted(GENERAL))
def test_general_log_snr_code_is_the_ve_code_with_the_ve_form(name):
    x = 10.0 * torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sig = torch.tensor([10.0, 4.0, 1.5, 0.6, 0.2, 0.05, 0.0], dtype=torch.float64)
    ve = KSAMPLERS[name](VEGauss(), x.clone(), sig, generator=torch.Generator().manual_seed(3), callback=None)
    general = GENERAL[name](VEGauss(), x.clone(), sig, torch.Generator().manual_seed(3))
    assert torch.allclose(ve, general, atol=1e-9, rtol=1e-9), float((ve - general).abs().max())


def test_er_sde_general_code_is_the_ve_code_with_the_ve_form():
    from nodegraph.diffusion.ksamplers.sde import _scale

    x = 10.0 * torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sig = torch.tensor([10.0, 4.0, 1.5, 0.6, 0.2, 0.05, 0.0], dtype=torch.float64)
    ve = KSAMPLERS["er_sde"](VEGauss(), x.clone(), sig, generator=torch.Generator().manual_seed(3), callback=None)
    general = rf_sde.er_sde(VEGauss(), x.clone(), sig, VarianceExploding(), _scale,
                            generator=torch.Generator().manual_seed(3), callback=None)
    assert torch.allclose(ve, general, atol=1e-9, rtol=1e-9)


def test_sampler_fn_runs_every_sampler_and_declares_the_flow_form():
    """The flow loop refuses nothing ComfyUI runs; a denoiser that declares no form (older family loops) gets the
    rectified-flow maths through ``sampler_fn``."""
    for name in KSAMPLERS:
        sampler_fn(name)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sig = torch.linspace(1.0, 0.0, 9)

    class Plain(FlowGauss):
        noise_form = None

    for name in ("euler_ancestral", "dpmpp_2m_sde", "sa_solver"):
        a = sampler_fn(name)(Plain(), noise.clone(), sig, generator=torch.Generator().manual_seed(1), callback=None)
        b = KSAMPLERS[name](FlowGauss(), noise.clone(), sig, generator=torch.Generator().manual_seed(1),
                            callback=None)
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="choose one of"):
        sampler_fn("no_such_sampler")


@pytest.mark.slow
def test_flux_graph_runs_ancestral_and_sde_samplers(flux_config):
    from flux_tiny import LAYOUTS
    from test_flux_parity import graph

    from nodegraph.testing_graphs import capture_engine, run_captured

    engine = capture_engine(flux_config)
    images = {}
    for sampler in ("euler", "euler_ancestral", "dpmpp_2m_sde"):
        result, cap = run_captured(engine, graph(LAYOUTS["comfyui"], sampler=sampler))
        result.raise_for_status()
        images[sampler] = cap["img"]
        assert torch.isfinite(images[sampler]).all(), sampler
    for sampler in ("euler_ancestral", "dpmpp_2m_sde"):
        diff = float((images[sampler] - images["euler"]).abs().mean())
        assert diff > 1e-3, (sampler, diff)
