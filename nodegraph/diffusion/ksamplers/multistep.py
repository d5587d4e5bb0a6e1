"""Linear multistep samplers on the probability-flow ODE dx/dsigma = (x - x0) / sigma.

- lms: Adams-Bashforth of order 4 with variable steps: the slope is interpolated by a Lagrange polynomial in sigma
  through the last slopes, integrated over the step (k-diffusion's LMS).
- ipndm: improved PNDM (Zhang & Chen 2023): the fixed-step Adams-Bashforth 1-4 coefficients whatever the spacing.
- ipndm_v: its variable-step form: Adams-Bashforth 1-4 with the coefficients of the actual step sizes (which is
  the same rule as lms).
- deis: DEIS-tAB (Zhang & Chen 2023) up to order 3: the slope is interpolated polynomially in the variance-
  preserving time t (beta_min 0.1, beta_d 19.9: sigma(t)^2 = e^(beta_d t^2 / 2 + beta_min t) - 1) and integrated
  against dsigma/dt; order 1 on the step to 0.
- res_multistep (+ CFG++ / ancestral forms): the second-order RES multistep exponential integrator in data
  prediction (Zhang et al. 2023, arXiv:2308.02157).
- gradient_estimation (+ CFG++): Euler plus the gradient-estimation correction (ge_gamma - 1)(d - d_prev) dsigma
  (Permenter & Yuan 2024).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._common import (
    Steps,
    ancestral_step,
    floats,
    gauss_legendre,
    gaussian,
    guided_and_uncond,
    lagrange,
    to_d,
)

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback

_AB = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def _combine(coeffs: Any, ds: list[Any]) -> Any:
    """sum(c_j * d_j) with ds newest first."""
    out = ds[0] * coeffs[0]
    for c, d in zip(coeffs[1:], ds[1:]):
        out = out + d * c
    return out


def _variable_ab(points: list[float], a: float, b: float) -> list[float]:
    """Adams-Bashforth weights: the integrals over [a, b] of the Lagrange basis of ``points`` (newest first)."""
    return [gauss_legendre(a, b, lagrange(points, j)) for j in range(len(points))]


def sample_lms(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
               callback: StepCallback, order: int = 4) -> torch.Tensor:
    """Linear multistep (variable-step Adams-Bashforth in sigma) of order up to ``order``."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    ds: list[Any] = []
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        ds.insert(0, to_d(x, sig[i], denoised))
        del ds[order:]
        x = x + _combine(_variable_ab(sig[i::-1][:len(ds)], sig[i], sig[i + 1]), ds)
        steps.done(i, denoised)
    return x


def sample_ipndm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                 callback: StepCallback, max_order: int = 4) -> torch.Tensor:
    """iPNDM: Adams-Bashforth with the fixed-step coefficients, warming up from order 1."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    ds: list[Any] = []
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        ds.insert(0, to_d(x, sig[i], denoised))
        del ds[max_order:]
        x = x + _combine(_AB[len(ds)], ds) * (sig[i + 1] - sig[i])
        steps.done(i, denoised)
    return x


def sample_ipndm_v(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                   generator: torch.Generator, callback: StepCallback, max_order: int = 4) -> torch.Tensor:
    """iPNDM with variable steps: Adams-Bashforth whose coefficients follow the actual sigma spacing."""
    return sample_lms(denoiser, x, sigmas, generator=generator, callback=callback, order=max_order)


_BETA_MIN, _BETA_D = 0.1, 19.9


def _vp_t(sigma: float) -> float:
    """The variance-preserving time t of ``sigma`` (inverse of sigma(t)^2 = e^(beta_d t^2/2 + beta_min t) - 1)."""
    c = math.log1p(sigma * sigma)
    return (math.sqrt(_BETA_MIN ** 2 + 2 * _BETA_D * c) - _BETA_MIN) / _BETA_D


def _dsigma_dt(t: Any) -> Any:
    import numpy as np

    e = np.exp(0.5 * _BETA_D * t * t + _BETA_MIN * t)
    return 0.5 * (_BETA_D * t + _BETA_MIN) * e / np.sqrt(np.maximum(e - 1.0, 1e-300))


def sample_deis(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                callback: StepCallback, max_order: int = 3) -> torch.Tensor:
    """DEIS-tAB: the slope interpolated in VP time through the last ``max_order`` points, integrated in sigma."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    ds: list[Any] = []
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        ds.insert(0, to_d(x, sig[i], denoised))
        del ds[max_order:]
        if sig[i + 1] <= 0 or len(ds) == 1:
            x = x + ds[0] * (sig[i + 1] - sig[i])
        else:
            ts = [_vp_t(s) for s in sig[i::-1][:len(ds)]]
            coeffs = [gauss_legendre(ts[0], _vp_t(sig[i + 1]),
                                     lambda t, j=j, ts=ts: lagrange(ts, j)(t) * _dsigma_dt(t))  # type: ignore[misc]
                      for j in range(len(ds))]
            x = x + _combine(coeffs, ds)
        steps.done(i, denoised)
    return x


def _phi1(z: float) -> float:
    return math.expm1(z) / z


def _phi2(z: float) -> float:
    return (_phi1(z) - 1.0) / z


def _res_multistep(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator,
                   callback: StepCallback, eta: float, cfg_pp: bool, s_noise: float = 1.0) -> torch.Tensor:
    """RES 2nd-order multistep in t = -log(sigma): x_next = e^(-h) x + h (b1 D_n + b2 D_prev), b2 = phi_2(-h) / c,
    b1 = phi_1(-h) - b2, c = -h_prev / h with h_prev the previous step's deterministic span; each step goes to
    sigma_down and then adds noise sigma_up (eta 0: plain multistep)."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    old: Any = None
    old_down = 0.0
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i]) if cfg_pp else (denoiser(x, sig[i]), None)
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        base = x if uncond is None else x + (denoised - uncond)
        if down == 0:
            x = denoised
        elif old is None:
            x = (down / sig[i]) * base + (1 - down / sig[i]) * denoised
        else:
            # The previous deterministic step spanned sigma_(i-1) -> its sigma_down (sigma_i when eta is 0).
            t, t_next = -math.log(sig[i]), -math.log(down)
            h = t_next - t
            c = (math.log(old_down) - math.log(sig[i - 1])) / h
            b2 = _phi2(-h) / c
            b1 = _phi1(-h) - b2
            x = math.exp(-h) * base + h * (b1 * denoised + b2 * old)
        if sig[i + 1] > 0 and up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        old, old_down = denoised, down
        steps.done(i, denoised)
    return x


def sample_res_multistep(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                         generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """RES multistep (deterministic)."""
    return _res_multistep(denoiser, x, sigmas, generator, callback, 0.0, False)


def sample_res_multistep_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """RES multistep with CFG++."""
    return _res_multistep(denoiser, x, sigmas, generator, callback, 0.0, True)


def sample_res_multistep_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                   generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """RES multistep to sigma_down, then ancestral noise (eta 1)."""
    return _res_multistep(denoiser, x, sigmas, generator, callback, 1.0, False)


def sample_res_multistep_ancestral_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                          generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """RES multistep ancestral with CFG++."""
    return _res_multistep(denoiser, x, sigmas, generator, callback, 1.0, True)


def sample_gradient_estimation(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                               generator: torch.Generator, callback: StepCallback, ge_gamma: float = 2.0,
                               cfg_pp: bool = False) -> torch.Tensor:
    """Gradient estimation: the Euler step plus (ge_gamma - 1) * (d - d_prev) * dsigma from the second step on;
    the step to 0 returns the x0 estimate."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    old_d: Any = None
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i]) if cfg_pp else (denoiser(x, sig[i]), None)
        d = to_d(x, sig[i], denoised if uncond is None else uncond)
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sig[i + 1] if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (d - old_d) * ((ge_gamma - 1) * dt)
        old_d = d
        steps.done(i, denoised)
    return x


def sample_gradient_estimation_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                      generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """Gradient estimation with CFG++."""
    return sample_gradient_estimation(denoiser, x, sigmas, generator=generator, callback=callback, cfg_pp=True)
