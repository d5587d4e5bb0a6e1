"""SEEDS-2 / SEEDS-3 (and the exponential Heun pair) in the half log-SNR lambda = log(alpha / sigma) of a noise form,
as ComfyUI runs them on every model: each stage is x_k = (s_k / s) e^(-r_k h eta) x - alpha_k (weights · x0s) with
the noise along one consistent path scaled by the stage's sigma. With alpha = 1, lambda = -log(sigma) this is the
variance-exploding code of ``sde``; with alpha = 1 - sigma the rectified-flow form.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._common import Steps, floats, gaussian
from ._common import expm1 as _e1
from ._common import phi2 as _e2

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def _first_stage(x: Any, denoised: Any, s: float, s_1: float, a_1: float, r: float, h: float, h_eta: float,
                 eta: float, s_noise: float, noisy: bool, generator: Any) -> tuple[Any, Any]:
    """(x at s_1 = sigma(lambda_s + r h) by a stochastic exponential Euler step, the noise path started there)."""
    x_1 = (s_1 / s) * math.exp(-r * h * eta) * x - (a_1 * _e1(-r * h_eta)) * denoised
    path: Any = None
    if noisy:
        path = gaussian(x, generator) * math.sqrt(-math.expm1(-2 * r * h * eta))
        x_1 = x_1 + path * (s_1 * s_noise)
    return x_1, path


def _renoised(x: Any, path: Any, seg: float, sigma: float, s_noise: float, generator: Any) -> tuple[Any, Any]:
    """(x plus the noise path continued over ``seg`` (its decay exponent) at ``sigma``, that path)."""
    path = path * math.exp(seg) + gaussian(x, generator) * math.sqrt(-math.expm1(2 * seg))
    return x + path * (sigma * s_noise), path


def seeds_2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *, generator: torch.Generator,
            callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
            solver_type: str = "phi_1") -> torch.Tensor:
    """SEEDS-2 in lambda: a stochastic exponential Euler stage at lambda_s + r h, then the full step from the two x0
    estimates (phi_1: their blend; phi_2: phi_1/phi_2 weights)."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"solver_type {solver_type!r}: use 'phi_1' or 'phi_2'")
    steps = Steps(sigmas, callback)
    sig = form.offset(floats(sigmas))
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, t = sig[i], sig[i + 1]
        if t == 0:
            x = denoised
            steps.done(i, denoised)
            continue
        lam_s, lam_t = form.lam(s), form.lam(t)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        s_1 = form.sigma(lam_s + r * h)
        a_1, a_t = form.alpha(s_1), form.alpha(t)
        x_2, path = _first_stage(x, denoised, s, s_1, a_1, r, h, h_eta, eta, s_noise, noisy, generator)
        denoised_2 = denoiser(x_2, s_1)
        if solver_type == "phi_1":
            mixed = denoised + (denoised_2 - denoised) / (2 * r)
            x = (t / s) * math.exp(-h * eta) * x - (a_t * _e1(-h_eta)) * mixed
        else:
            b2 = _e2(-h_eta) / r
            b1 = _e1(-h_eta) - b2
            x = (t / s) * math.exp(-h * eta) * x - a_t * (b1 * denoised + b2 * denoised_2)
        if noisy:
            x, path = _renoised(x, path, (r - 1) * h * eta, t, s_noise, generator)
        steps.done(i, denoised)
    return x


def seeds_3(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *, generator: torch.Generator,
            callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1 / 3,
            r_2: float = 2 / 3) -> torch.Tensor:
    """SEEDS-3 in lambda: stages at r_1 and r_2 of the step, then the phi_1/phi_2 combination."""
    steps = Steps(sigmas, callback)
    sig = form.offset(floats(sigmas))
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, t = sig[i], sig[i + 1]
        if t == 0:
            x = denoised
            steps.done(i, denoised)
            continue
        lam_s, lam_t = form.lam(s), form.lam(t)
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        s_1, s_2 = form.sigma(lam_s + r_1 * h), form.sigma(lam_s + r_2 * h)
        a_1, a_2, a_t = form.alpha(s_1), form.alpha(s_2), form.alpha(t)
        x_2, path = _first_stage(x, denoised, s, s_1, a_1, r_1, h, h_eta, eta, s_noise, noisy, generator)
        denoised_2 = denoiser(x_2, s_1)
        a32 = r_2 / r_1 * _e2(-r_2 * h_eta)
        a31 = _e1(-r_2 * h_eta) - a32
        x_3 = (s_2 / s) * math.exp(-r_2 * h * eta) * x - a_2 * (a31 * denoised + a32 * denoised_2)
        if noisy:
            x_3, path = _renoised(x_3, path, (r_1 - r_2) * h * eta, s_2, s_noise, generator)
        denoised_3 = denoiser(x_3, s_2)
        b3 = _e2(-h_eta) / r_2
        b1 = _e1(-h_eta) - b3
        x = (t / s) * math.exp(-h * eta) * x - a_t * (b1 * denoised + b3 * denoised_3)
        if noisy:
            x, path = _renoised(x, path, (r_2 - 1) * h * eta, t, s_noise, generator)
        steps.done(i, denoised)
    return x
