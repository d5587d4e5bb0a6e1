"""The k-diffusion-convention samplers against an exact denoiser.

Data ~ N(MU, S^2) per element gives the exact x0(x, sigma) = (S^2 x + sigma^2 MU) / (S^2 + sigma^2) and the exact
probability-flow ODE solution x(sigma) = MU + (x_T - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_T^2):
deterministic samplers converge to it at roughly their order, stochastic ones reproduce the data's mean and
variance, and a few update rules are checked on hand-worked single steps.
"""

from __future__ import annotations

import math

import pytest
import torch

from nodegraph.diffusion.ksamplers import KSAMPLERS

MU, S = 0.3, 0.5


class Gauss:
    """The exact denoiser of N(mu, s^2) data; with ``uncond_mu`` a second (unconditional) Gaussian for CFG."""

    def __init__(self, mu: float = MU, s: float = S, uncond_mu: float | None = None, cfg: float = 1.0) -> None:
        self.mu, self.s, self.uncond_mu, self.cfg, self.calls = mu, s, uncond_mu, cfg, 0
        self.conditioning: list = []

    def _x0(self, x: torch.Tensor, sigma: float, mu: float) -> torch.Tensor:
        return (self.s ** 2 * x + sigma ** 2 * mu) / (self.s ** 2 + sigma ** 2)

    def split(self, x: torch.Tensor, sigma: float):
        self.calls += 1
        cond = self._x0(x, sigma, self.mu)
        return cond, None if self.uncond_mu is None else self._x0(x, sigma, self.uncond_mu)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        cond, uncond = self.split(x, sigma)
        return cond if uncond is None else uncond + self.cfg * (cond - uncond)


def karras(n: int, smin: float = 1e-3, smax: float = 10.0, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    sig = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])


def _run(name: str, x: torch.Tensor, sigmas: torch.Tensor, denoiser=None, seed: int = 1, log=None) -> torch.Tensor:
    callback = (lambda *a: log.append(a)) if log is not None else (lambda *a: None)
    return KSAMPLERS[name](denoiser or Gauss(), x.clone(), sigmas, generator=torch.Generator().manual_seed(seed),
                           callback=callback)


#: Deterministic samplers and the convergence order each must show (measured: see test ids / report).
ORDERS = {
    "euler": 1, "euler_cfg_pp": 1, "ddim": 1, "heunpp2": 1, "gradient_estimation": 0.9,
    "gradient_estimation_cfg_pp": 0.9, "heun": 2, "dpm_2": 2, "exp_heun_2_x0": 2, "dpmpp_2m": 2,
    "dpmpp_2m_cfg_pp": 2, "res_multistep": 2, "res_multistep_cfg_pp": 2, "ipndm": 2, "dpm_fast": 2.5, "deis": 2.5,
    "lms": 3, "ipndm_v": 3, "uni_pc": 3.5, "uni_pc_bh2": 3.5,
}
STOCHASTIC = ["euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral",
              "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
              "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
              "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "exp_heun_2_x0_sde", "er_sde", "seeds_2",
              "seeds_3", "sa_solver", "sa_solver_pece"]


def test_every_sampler_is_classified():
    assert set(ORDERS) | set(STOCHASTIC) | {"lcm", "dpm_adaptive"} == set(KSAMPLERS)


@pytest.mark.parametrize("name", sorted(ORDERS))
def test_deterministic_samplers_converge_to_the_ode_solution_at_their_order(name):
    torch.manual_seed(0)
    x_t = MU + 10.0 * torch.randn(64, dtype=torch.float64)
    exact = MU + (x_t - MU) * S / math.sqrt(S * S + 100.0)
    errors = [float((_run(name, x_t, karras(n)) - exact).abs().max()) for n in (16, 32, 64)]
    orders = [math.log2(errors[k] / errors[k + 1]) for k in range(2)]
    assert errors[0] > errors[1] > errors[2], errors
    assert min(orders) >= ORDERS[name] - 0.35, (errors, orders)
    assert errors[2] < 0.06, errors


def test_dpm_adaptive_meets_its_tolerance_whatever_the_step_count():
    x_t = MU + 10.0 * torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = MU + (x_t - MU) * S / math.sqrt(S * S + 100.0)
    for n in (4, 32):
        denoiser = Gauss()
        err = float((_run("dpm_adaptive", x_t, karras(n), denoiser) - exact).abs().max())
        assert err < 0.06 and denoiser.calls > 6, (n, err, denoiser.calls)


def _moments(name: str, steps: int = 40) -> tuple[float, float]:
    sigma_t = 10.0
    x_t = MU + math.sqrt(S * S + sigma_t ** 2) * torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    out = _run(name, x_t, karras(steps, smin=0.03, smax=sigma_t).float())
    return float(out.mean()), float(out.std())


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_reproduce_the_data_distribution(name):
    mean, std = _moments(name)
    assert abs(mean - MU) < 0.03 and abs(std - S) < 0.09 * S, (mean, std)


def test_lcm_follows_its_renoising_rule():
    """LCM with an ordinary denoiser is not a consistency model: its variance follows the recursion
    Var' = (S^2 / (S^2 + sigma^2))^2 Var + sigma_next^2 exactly, which the samples reproduce."""
    sig = karras(40, smin=0.03, smax=10.0)
    var = S * S + 100.0
    for s, s_next in zip(sig[:-1].tolist(), sig[1:].tolist()):
        var = (S * S / (S * S + s * s)) ** 2 * var + s_next ** 2
    mean, std = _moments("lcm")
    assert abs(mean - MU) < 0.03 and abs(std - math.sqrt(var)) < 0.04 * math.sqrt(var), (std, math.sqrt(var))


def test_gpu_variants_are_the_same_algorithm():
    x_t = 10.0 * torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    for name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"):
        assert torch.equal(_run(name, x_t, karras(6).float()), _run(name + "_gpu", x_t, karras(6).float()))


def test_seeds_change_stochastic_samplers_only():
    x_t = 10.0 * torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    for name in STOCHASTIC:
        a, b = _run(name, x_t, karras(5).float(), seed=1), _run(name, x_t, karras(5).float(), seed=2)
        assert torch.equal(a, _run(name, x_t, karras(5).float(), seed=1)) and not torch.equal(a, b), name
    for name in ORDERS:
        assert torch.equal(_run(name, x_t, karras(5).float(), seed=1), _run(name, x_t, karras(5).float(), seed=2))


def test_cfg_pp_samplers_equal_theirs_at_cfg_1_and_follow_the_unconditional_direction():
    x_t = MU + 10.0 * torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for name in KSAMPLERS:
        if name.endswith("_cfg_pp"):
            base = name[:-len("_cfg_pp")]
            assert torch.allclose(_run(name, x_t, karras(6)), _run(base, x_t, karras(6)), rtol=1e-12, atol=1e-12), name
    # one CFG++ Euler step by hand: x1 = x0_guided + sigma_1 (x - x0_uncond) / sigma_0
    guided = Gauss(mu=1.0, uncond_mu=0.0, cfg=3.0)
    x = torch.tensor([2.0], dtype=torch.float64)
    sig = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    log: list = []
    _run("euler_cfg_pp", x, sig[:2], guided, log=log)
    x0_c, x0_u = (S * S * 2 + 4 * 1.0) / (S * S + 4), (S * S * 2) / (S * S + 4)
    x0_g = x0_u + 3.0 * (x0_c - x0_u)
    out = _run("euler_cfg_pp", x, sig[:2], guided)
    assert float(out) == pytest.approx(x0_g + 1.0 * (2.0 - x0_u) / 2.0)
    assert len(log) == 1 and float(log[0][2]) == pytest.approx(x0_g)


class Unit:
    """x0(x, sigma) = x / (1 + sigma^2): the exact denoiser of N(0, 1) data, for hand-worked steps."""

    cfg = 1.0

    def __call__(self, x, sigma):
        return x / (1 + sigma * sigma)

    def split(self, x, sigma):
        return self(x, sigma), None


@pytest.mark.parametrize(("name", "sigmas", "expected"), [
    # euler: x0 = 2/5, d = (2 - 0.4) / 2 = 0.8, x = 2 - 0.8 = 1.2; then x0 = 0.6, d = 0.6, x = 0.6
    ("euler", [2.0, 1.0, 0.0], 0.6),
    # heun: d = 0.8, Euler guess 1.2, d2 = (1.2 - 0.6) / 1 = 0.6, x = 2 - (0.8 + 0.6) / 2 = 1.3; last step Euler:
    # x0 = 0.65, x = 0.65
    ("heun", [2.0, 1.0, 0.0], 0.65),
    # dpmpp_2m: first order x = 0.5 * 2 + 0.5 * 0.4 = 1.2; then x0 = 0.6, r = 1, D = 0.6 + (0.6 - 0.4) / 2 = 0.7,
    # x = 0.5 * 1.2 + 0.5 * 0.7 = 0.95; last step returns x0 = 0.95 / 1.25 = 0.76
    ("dpmpp_2m", [2.0, 1.0, 0.5, 0.0], 0.76),
    # ipndm: d1 = (2 - 0.2) / 3 = 0.6, x = 1.4; d2 = (1.4 - 0.28) / 2 = 0.56, x = 1.4 - (3 * 0.56 - 0.6) / 2 = 0.86;
    # d3 = 0.43, x = 0.86 - (23 * 0.43 - 16 * 0.56 + 5 * 0.6) / 12 = 0.5325
    ("ipndm", [3.0, 2.0, 1.0, 0.0], 0.5325),
])
def test_hand_worked_steps(name, sigmas, expected):
    log: list = []
    out = KSAMPLERS[name](Unit(), torch.tensor([2.0], dtype=torch.float64), torch.tensor(sigmas, dtype=torch.float64),
                          generator=torch.Generator().manual_seed(0), callback=lambda *a: log.append(a))
    assert float(out) == pytest.approx(expected, abs=1e-12)
    assert [(i, n) for i, n, _ in log] == [(k + 1, len(sigmas) - 1) for k in range(len(sigmas) - 1)]
