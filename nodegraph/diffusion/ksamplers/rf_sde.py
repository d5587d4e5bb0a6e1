"""The SDE samplers in the half log-SNR lambda = log(alpha / sigma) of a noise form (``forms``), as ComfyUI runs them
on every model: DPM-Solver++ SDE, DPM-Solver++(2M) SDE (midpoint/Heun), DPM-Solver++(3M) SDE and ER-SDE.

With alpha = 1 and lambda = -log(sigma) these are the variance-exploding samplers of ``dpm``/``sde``; with the
rectified flow's alpha = 1 - sigma they are ComfyUI's CONST forms. The first sigma of a rectified-flow schedule is
moved off 1 (``offset``) so that lambda is finite; the Brownian tree keeps the schedule's own range.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._common import Steps, floats, gauss_legendre, gaussian
from .forms import ancestral_ve
from .noise import BrownianNoise

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def dpmpp_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *, generator: torch.Generator,
              callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
              on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++ stochastic single-step in lambda: an ancestral data-prediction step to lambda_s + r h, then the
    full step from the blend (1 - 1/(2r)) x0 + 1/(2r) x0_mid, each ancestral split on e^-lambda (= sigma / alpha)
    and its noise scaled by alpha."""
    steps = Steps(sigmas, callback)
    if len(sigmas) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    sig = form.offset(floats(sigmas))
    fac = 1 / (2 * r)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, t = sig[i], sig[i + 1]
        if t == 0:
            x = denoised
        else:
            lam_s, lam_t = form.lam(s), form.lam(t)
            h = lam_t - lam_s
            lam_1 = lam_s + r * h
            s_1 = form.sigma(lam_1)
            a_s, a_1, a_t = form.alpha(s), form.alpha(s_1), form.alpha(t)
            down, up = ancestral_ve(math.exp(-lam_s), math.exp(-lam_1), eta)
            h_ = -math.log(down) - lam_s
            x_2 = (a_1 / a_s) * math.exp(-h_) * x - (a_1 * math.expm1(-h_)) * denoised
            if eta > 0 and s_noise > 0:
                x_2 = x_2 + noise(s, s_1) * (a_1 * s_noise * up)
            denoised_2 = denoiser(x_2, s_1)
            down, up = ancestral_ve(math.exp(-lam_s), math.exp(-lam_t), eta)
            h_ = -math.log(down) - lam_s
            mixed = (1 - fac) * denoised + fac * denoised_2
            x = (a_t / a_s) * math.exp(-h_) * x - (a_t * math.expm1(-h_)) * mixed
            if eta > 0 and s_noise > 0:
                x = x + noise(s, t) * (a_t * s_noise * up)
        steps.done(i, denoised)
    return x


def dpmpp_2m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *,
                 generator: torch.Generator, callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0,
                 solver_type: str = "midpoint", on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) SDE in lambda: x = (t/s) e^(-eta h) x + alpha_t (1 - e^(-(1+eta) h)) x0, the midpoint or
    Heun correction from the previous x0, and Brownian noise t sqrt(1 - e^(-2 eta h))."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type {solver_type!r}: use 'midpoint' or 'heun'")
    steps = Steps(sigmas, callback)
    if len(sigmas) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    sig = form.offset(floats(sigmas))
    old: Any = None
    h_last = 0.0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, t = sig[i], sig[i + 1]
        h = h_last
        if t == 0:
            x = denoised
        else:
            h = form.lam(t) - form.lam(s)
            h_eta = h * (eta + 1)
            a_t = form.alpha(t)
            keep = -math.expm1(-h_eta)
            x = (t / s) * math.exp(-h * eta) * x + (a_t * keep) * denoised
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (a_t * (keep / (-h_eta) + 1) / r) * (denoised - old)
                else:
                    x = x + (0.5 * a_t * keep / r) * (denoised - old)
            if eta > 0 and s_noise > 0:
                x = x + noise(s, t) * (t * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        old, h_last = denoised, h
        steps.done(i, denoised)
    return x


def dpmpp_3m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *,
                 generator: torch.Generator, callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0,
                 on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++(3M) SDE in lambda: the first-order SDE step plus alpha_t-scaled phi_2 / phi_3 corrections from the
    divided differences of the last three x0 estimates, with Brownian noise."""
    steps = Steps(sigmas, callback)
    if len(sigmas) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    sig = form.offset(floats(sigmas))
    d_1: Any = None
    d_2: Any = None
    h = h_1 = h_2 = 0.0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, t = sig[i], sig[i + 1]
        if t == 0:
            x = denoised
        else:
            h = form.lam(t) - form.lam(s)
            h_eta = h * (eta + 1)
            a_t = form.alpha(t)
            x = (t / s) * math.exp(-h * eta) * x + (-a_t * math.expm1(-h_eta)) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                g0, g1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                first = g0 + (g0 - g1) * (r0 / (r0 + r1))
                second = (g0 - g1) / (r0 + r1)
                x = x + (a_t * phi_2) * first - (a_t * (phi_2 / h_eta - 0.5)) * second
            elif d_1 is not None:
                x = x + (a_t * phi_2) * (denoised - d_1) / (h_1 / h)
            if eta > 0 and s_noise > 0:
                x = x + noise(s, t) * (t * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
        steps.done(i, denoised)
    return x


def er_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, scale: Any, *,
           generator: torch.Generator, callback: StepCallback, s_noise: float = 1.0,
           max_stage: int = 3) -> torch.Tensor:
    """ER-SDE-Solver in the VP form: with lam_t = e^-lambda (= sigma / alpha) and r = phi(lam_t) / phi(lam_s),
    x = (alpha_t / alpha_s) r x + alpha_t (1 - r) x0, plus alpha_t-scaled stage-2/3 terms and noise
    alpha_t sqrt(lam_t^2 - lam_s^2 r^2); ``scale`` is the noise scale function phi."""
    steps = Steps(sigmas, callback)
    sig = form.offset(floats(sigmas))
    er = [0.0 if s <= 0 else math.exp(-form.lam(s)) for s in sig]
    old: Any = None
    old_d: Any = None
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        stage = min(max_stage, i + 1)
        if sig[i + 1] == 0:
            x = denoised
        else:
            e_s, e_t = er[i], er[i + 1]
            a_s, a_t = form.alpha(sig[i]), form.alpha(sig[i + 1])
            phi_t = float(scale(e_t))
            r = phi_t / float(scale(e_s))
            x = (a_t / a_s) * r * x + (a_t * (1 - r)) * denoised
            if stage >= 2 and old is not None:
                dt = e_t - e_s
                inv = gauss_legendre(e_t, e_s, lambda v: 1.0 / scale(v))
                dd = (denoised - old) / (e_s - er[i - 1])
                x = x + dd * (a_t * (dt + inv * phi_t))
                if stage >= 3 and old_d is not None:
                    inv_u = gauss_legendre(e_t, e_s, lambda v, e_s=e_s: (v - e_s) / scale(v))  # type: ignore[misc]
                    du = (dd - old_d) / ((e_s - er[i - 2]) / 2)
                    x = x + du * (a_t * (dt * dt / 2 + inv_u * phi_t))
                old_d = dd
            if s_noise > 0:
                x = x + gaussian(x, generator) * (a_t * s_noise * math.sqrt(max(e_t * e_t - e_s * e_s * r * r, 0.0)))
        old = denoised
        steps.done(i, denoised)
    return x
