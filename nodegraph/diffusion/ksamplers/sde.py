"""Stochastic exponential-integrator samplers in data prediction (x0), in t = -log(sigma) (half log-SNR):

- er_sde: ER-SDE-Solver-3 (Cui et al. 2023, arXiv:2309.06169), VE form with the paper's noise scale function
  phi(sigma) = sigma (e^(sigma^0.3) + 10); stages 2-3 integrate the x0 divided differences against 1/phi.
- seeds_2 / seeds_3: SEEDS (Gonzalez et al. 2023, arXiv:2305.14267) stages 2 and 3, the stochastic exponential
  Runge-Kutta schemes whose noise across the sub-steps is one consistent Brownian path.
- exp_heun_2_x0 (+ _sde): the exponential Heun method, i.e. SEEDS-2 with its intermediate point at the step's end
  and phi_2 weights (deterministic, or with eta 1).
- sa_solver (+ _pece): SA-Solver (Xue et al. 2023, arXiv:2309.05019): stochastic Adams predictor (order 3) and
  corrector (order 4) whose weights integrate the Lagrange basis in t against (1 + tau^2) e^((1+tau^2)(t - t_next));
  tau = 1 between 20% and 80% of the model's noise range, 0 elsewhere; PECE re-evaluates the corrected state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import rf_sde, rf_seeds
from ._common import Steps, floats, gauss_legendre, gaussian, lagrange
from ._common import expm1 as _e1
from ._common import phi2 as _e2
from .forms import flow_form

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def _scale(sigma: Any) -> Any:
    """ER-SDE's noise scale function phi(sigma) = sigma * (e^(sigma^0.3) + 10)."""
    import numpy as np

    return sigma * (np.exp(np.power(sigma, 0.3)) + 10.0)


def sample_er_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                  generator: torch.Generator, callback: StepCallback, s_noise: float = 1.0,
                  max_stage: int = 3, noise_scaler: Any = None) -> torch.Tensor:
    """ER-SDE-Solver: x = r x + (1 - r) x0 + stage-2/3 terms + noise sigma_next-consistent, r = phi(s_n) / phi(s);
    ``noise_scaler`` replaces the noise scale function phi (e.g. sigma^(eta + 1) for the reverse-time SDE)."""
    scale = _scale if noise_scaler is None else noise_scaler
    form = flow_form(denoiser)
    if form is not None:  # rectified flow: ComfyUI's VP form in the half log-SNR
        return rf_sde.er_sde(denoiser, x, sigmas, form, scale, generator=generator, callback=callback,
                             s_noise=s_noise, max_stage=max_stage)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    old: Any = None
    old_d: Any = None
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        stage = min(max_stage, i + 1)
        if sig[i + 1] == 0:
            x = denoised
        else:
            s, t = sig[i], sig[i + 1]
            phi_t = float(scale(t))
            r = phi_t / float(scale(s))
            x = r * x + (1 - r) * denoised
            if stage >= 2 and old is not None:
                dt = t - s
                inv = gauss_legendre(t, s, lambda v: 1.0 / scale(v))
                dd = (denoised - old) / (s - sig[i - 1])
                x = x + dd * (dt + inv * phi_t)
                if stage >= 3 and old_d is not None:
                    inv_u = gauss_legendre(t, s, lambda v, s=s: (v - s) / scale(v))  # type: ignore[misc]
                    du = (dd - old_d) / ((s - sig[i - 2]) / 2)
                    x = x + du * (dt * dt / 2 + inv_u * phi_t)
                old_d = dd
            if s_noise > 0:
                x = x + gaussian(x, generator) * (s_noise * math.sqrt(max(t * t - s * s * r * r, 0.0)))
        old = denoised
        steps.done(i, denoised)
    return x


def _seeds_2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator,
             callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5,
             solver_type: str = "phi_1") -> torch.Tensor:
    """SEEDS-2: a stochastic exponential Euler step to the point ``r`` of the way in t, then the full step from the
    two x0 estimates (phi_1: their linear blend; phi_2: phi_1/phi_2 weights), the noise one consistent path."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_seeds.seeds_2(denoiser, x, sigmas, form, generator=generator, callback=callback, eta=eta,
                                s_noise=s_noise, r=r, solver_type=solver_type)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        if sig[i + 1] == 0:
            x = denoised
            steps.done(i, denoised)
            continue
        s, t = sig[i], sig[i + 1]
        h = math.log(s) - math.log(t)
        h_eta = h * (eta + 1)
        s_1 = math.exp(-(-math.log(s) + r * h))
        x_2 = (s_1 / s) * math.exp(-r * h * eta) * x - _e1(-r * h_eta) * denoised
        path: Any = None
        if noisy:
            path = gaussian(x, generator) * math.sqrt(-math.expm1(-2 * r * h * eta))
            x_2 = x_2 + path * (s_1 * s_noise)
        denoised_2 = denoiser(x_2, s_1)
        if solver_type == "phi_1":
            mixed = denoised + (denoised_2 - denoised) / (2 * r)
            x = (t / s) * math.exp(-h * eta) * x - _e1(-h_eta) * mixed
        else:
            b2 = _e2(-h_eta) / r
            b1 = _e1(-h_eta) - b2
            x = (t / s) * math.exp(-h * eta) * x - (b1 * denoised + b2 * denoised_2)
        if noisy:
            seg = (r - 1) * h * eta
            path = path * math.exp(seg) + gaussian(x, generator) * math.sqrt(-math.expm1(2 * seg))
            x = x + path * (t * s_noise)
        steps.done(i, denoised)
    return x


def sample_seeds_2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                   generator: torch.Generator, callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0,
                   r: float = 0.5, solver_type: str = "phi_1") -> torch.Tensor:
    """SEEDS-2 (by default eta 1, r 1/2, phi_1)."""
    return _seeds_2(denoiser, x, sigmas, generator, callback, eta=eta, s_noise=s_noise, r=r, solver_type=solver_type)


def sample_exp_heun_2_x0(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                         generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """Exponential Heun (deterministic): SEEDS-2 with r 1, phi_2 weights, no noise."""
    return _seeds_2(denoiser, x, sigmas, generator, callback, eta=0.0, s_noise=0.0, r=1.0, solver_type="phi_2")


def sample_exp_heun_2_x0_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                             generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """Exponential Heun, stochastic (eta 1): SEEDS-2 with r 1 and phi_2 weights."""
    return _seeds_2(denoiser, x, sigmas, generator, callback, r=1.0, solver_type="phi_2")


def sample_seeds_3(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                   generator: torch.Generator, callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0,
                   r_1: float = 1 / 3, r_2: float = 2 / 3) -> torch.Tensor:
    """SEEDS-3: stochastic exponential Runge-Kutta with intermediate points at r_1 and r_2 of the step in t."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_seeds.seeds_3(denoiser, x, sigmas, form, generator=generator, callback=callback, eta=eta,
                                s_noise=s_noise, r_1=r_1, r_2=r_2)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        if sig[i + 1] == 0:
            x = denoised
            steps.done(i, denoised)
            continue
        s, t = sig[i], sig[i + 1]
        h = math.log(s) - math.log(t)
        h_eta = h * (eta + 1)
        s_1, s_2 = s * math.exp(-r_1 * h), s * math.exp(-r_2 * h)
        x_2 = (s_1 / s) * math.exp(-r_1 * h * eta) * x - _e1(-r_1 * h_eta) * denoised
        path: Any = None
        if noisy:
            path = gaussian(x, generator) * math.sqrt(-math.expm1(-2 * r_1 * h * eta))
            x_2 = x_2 + path * (s_1 * s_noise)
        denoised_2 = denoiser(x_2, s_1)
        a32 = r_2 / r_1 * _e2(-r_2 * h_eta)
        a31 = _e1(-r_2 * h_eta) - a32
        x_3 = (s_2 / s) * math.exp(-r_2 * h * eta) * x - (a31 * denoised + a32 * denoised_2)
        if noisy:
            seg = (r_1 - r_2) * h * eta
            path = path * math.exp(seg) + gaussian(x, generator) * math.sqrt(-math.expm1(2 * seg))
            x_3 = x_3 + path * (s_2 * s_noise)
        denoised_3 = denoiser(x_3, s_2)
        b3 = _e2(-h_eta) / r_2
        b1 = _e1(-h_eta) - b3
        x = (t / s) * math.exp(-h * eta) * x - (b1 * denoised + b3 * denoised_3)
        if noisy:
            seg = (r_2 - 1) * h * eta
            path = path * math.exp(seg) + gaussian(x, generator) * math.sqrt(-math.expm1(2 * seg))
            x = x + path * (t * s_noise)
        steps.done(i, denoised)
    return x


def _sa_weights(lambdas: list[float], l_s: float, l_t: float, tau: float) -> list[float]:
    """SA-Solver weights: integral over [l_s, l_t] of (1 + tau^2) e^((1 + tau^2)(l - l_t)) times each Lagrange basis
    polynomial of ``lambdas`` (x0 estimates interpolated in t = -log sigma)."""
    import numpy as np

    k = 1 + tau * tau
    out = []
    for j in range(len(lambdas)):
        basis = lagrange(lambdas, j)

        def kernel(v: Any, basis: Any = basis) -> Any:
            return k * np.exp(k * (v - l_t)) * basis(v)

        out.append(gauss_legendre(l_s, l_t, kernel))
    return out


def _tau_range(denoiser: Denoiser, sig: list[float]) -> tuple[float, float]:
    """(low, high) sigmas of the stochastic interval: the model's noise levels at 80% and 20% of its timesteps."""
    import numpy as np

    train = getattr(denoiser, "train", None)
    if train is None or len(train) < 2:
        positive = [s for s in sig if s > 0]
        lo, hi = min(positive), max(positive)
        return math.exp(math.log(lo) + 0.2 * (math.log(hi) - math.log(lo))), \
            math.exp(math.log(lo) + 0.8 * (math.log(hi) - math.log(lo)))
    log_s = np.log(np.asarray(train, dtype=np.float64))
    at = lambda pct: float(np.exp(np.interp((1 - pct) * (len(log_s) - 1), np.arange(len(log_s)), log_s)))
    return at(0.8), at(0.2)


def _sa_solver(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator,
               callback: StepCallback, pece: bool, predictor_order: int = 3, corrector_order: int = 4,
               s_noise: float = 1.0, tau_interval: tuple[float, float, float] | None = None) -> torch.Tensor:
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    if len(sig) <= 1:
        return x
    form = flow_form(denoiser)
    if form is not None:  # rectified flow: lambda = log((1 - sigma) / sigma), weights scaled by alpha = 1 - sigma
        sig = form.offset(sig)
        lo, hi = float(form.percent_to_sigma(0.8)), float(form.percent_to_sigma(0.2))
    else:
        lo, hi = _tau_range(denoiser, sig)
    strength = 1.0
    if tau_interval is not None:  # (low sigma, high sigma, eta): tau = eta where sigma_next lies in [low, high]
        lo, hi, strength = tau_interval
    lam = [-math.log(s) if s > 0 else math.inf for s in sig] if form is None else [form.lam(s) for s in sig]
    n = len(sig) - 1
    to_end = sig[-1] == 0
    x_pred, tau = x, 0.0
    preds: list[Any] = []
    noise: Any = None
    for i in range(n):
        denoised = denoiser(x_pred, sig[i])
        preds = (preds + [denoised])[-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sig[i + 1] == 0 and not pece) else min(corrector_order, len(preds))
        if to_end:
            p_order, c_order = min(p_order, n - 1 - i), min(c_order, n - i)
        if c_order == 0:
            x = x_pred
        else:
            w = _scaled(_sa_weights(lam[i - c_order + 1:i + 1][::-1], lam[i - 1], lam[i], tau), form, sig[i])
            h = lam[i] - lam[i - 1]
            x = (sig[i] / sig[i - 1]) * math.exp(-tau * tau * h) * x + _combine(w, preds[::-1][:c_order])
            if noise is not None:
                x = x + noise
            if pece:
                denoised = denoiser(x, sig[i])
                preds[-1] = denoised
        if sig[i + 1] == 0:
            x_pred = denoised
        else:
            tau = strength if lo <= sig[i + 1] <= hi else 0.0
            p = max(p_order, 1)
            w = _scaled(_sa_weights(lam[i - p + 1:i + 1][::-1], lam[i], lam[i + 1], tau), form, sig[i + 1])
            h = lam[i + 1] - lam[i]
            x_pred = (sig[i + 1] / sig[i]) * math.exp(-tau * tau * h) * x + _combine(w, preds[::-1][:p])
            noise = None
            if tau > 0 and s_noise > 0:
                noise = gaussian(x, generator) * (sig[i + 1] * math.sqrt(-math.expm1(-2 * tau * tau * h)) * s_noise)
                x_pred = x_pred + noise
        steps.done(i, denoised)
    return x_pred


def _scaled(weights: list[float], form: Any, sigma: float) -> list[float]:
    """The weights times the signal scale alpha at ``sigma`` (1 for variance-exploding models: unchanged)."""
    if form is None:
        return weights
    alpha = form.alpha(sigma)
    return [alpha * w for w in weights]


def _combine(weights: list[float], newest_first: list[Any]) -> Any:
    out = newest_first[0] * weights[0]
    for w, d in zip(weights[1:], newest_first[1:]):
        out = out + d * w
    return out


def sample_sa_solver(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                     generator: torch.Generator, callback: StepCallback, predictor_order: int = 3,
                     corrector_order: int = 4, s_noise: float = 1.0, use_pece: bool = False,
                     tau_interval: tuple[float, float, float] | None = None) -> torch.Tensor:
    """SA-Solver (by default predictor order 3, corrector order 4, tau 1 over 20-80% of the noise range);
    ``tau_interval`` = (low sigma, high sigma, eta) sets where and how strongly it is stochastic."""
    return _sa_solver(denoiser, x, sigmas, generator, callback, pece=use_pece, predictor_order=predictor_order,
                      corrector_order=corrector_order, s_noise=s_noise, tau_interval=tau_interval)


def sample_sa_solver_pece(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                          generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """SA-Solver in PECE mode (the corrected state is evaluated again)."""
    return _sa_solver(denoiser, x, sigmas, generator, callback, pece=True)
