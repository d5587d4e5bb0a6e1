"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) samplers in log-sigma time t = -log(sigma).

- dpm_fast / dpm_adaptive: DPM-Solver-1/2/3 on the noise prediction, with fixed steps uniform in t (orders 3, 3, …,
  then 1-2 to spend exactly the step count as evaluations) or adaptive steps (DPM-Solver-23 with an embedded error
  estimate and a PID step-size controller). Both stop at the smallest nonzero sigma of the schedule, as ComfyUI's.
- dpmpp_2s_ancestral, dpmpp_sde (stochastic single-step), dpmpp_2m, dpmpp_2m_sde (midpoint or Heun correction),
  dpmpp_3m_sde: the data-prediction (x0) exponential integrators; the SDE forms add Brownian-tree noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import rf_ancestral, rf_sde
from ._common import Steps, ancestral_step, floats, gaussian, guided_and_uncond, to_d
from .forms import flow_form
from .noise import BrownianNoise

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


class _Eps:
    """The noise prediction eps(x, t) = (x - x0) / sigma at t = -log(sigma), counting evaluations."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.last_x0: Any = None

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        sigma = math.exp(-t)
        self.last_x0 = self.denoiser(x, sigma)
        return (x - self.last_x0) / sigma


def _solver_step(eps_fn: _Eps, x: torch.Tensor, t: float, t_next: float, order: int, eps: torch.Tensor,
                 r1: float | None = None) -> torch.Tensor:
    """One DPM-Solver-``order`` step from t to t_next (eps at t given); order 2 takes its intermediate point r1."""
    h = t_next - t
    sn = math.exp(-t_next)
    base = x - sn * math.expm1(h) * eps
    if order == 1:
        return base
    if order == 2:
        r = 0.5 if r1 is None else r1
        s1 = t + r * h
        u1 = x - math.exp(-s1) * math.expm1(r * h) * eps
        return base - sn / (2 * r) * math.expm1(h) * (eps_fn(u1, s1) - eps)
    r1_, r2 = 1 / 3, 2 / 3
    s1, s2 = t + r1_ * h, t + r2 * h
    u1 = x - math.exp(-s1) * math.expm1(r1_ * h) * eps
    e1 = eps_fn(u1, s1)
    u2 = (x - math.exp(-s2) * math.expm1(r2 * h) * eps
          - math.exp(-s2) * (r2 / r1_) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - eps))
    e2 = eps_fn(u2, s2)
    return base - sn / r2 * (math.expm1(h) / h - 1) * (e2 - eps)


def _range(sig: list[float]) -> tuple[float, float]:
    """(sigma_max, sigma_min): the first sigma and the smallest nonzero one."""
    positive = [s for s in sig if s > 0]
    return sig[0], min(positive)


def sample_dpm_fast(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """DPM-Solver-fast: len(sigmas) - 1 evaluations spent on steps uniform in log sigma between the schedule's
    first and smallest nonzero sigma, third order where possible (the schedule's spacing itself is not used)."""
    sig = floats(sigmas)
    if len(sig) <= 1:
        return x
    nfe = len(sig) - 1
    smax, smin = _range(sig)
    t0, t1 = -math.log(smax), -math.log(smin)
    m = nfe // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    ts = [t0 + (t1 - t0) * k / len(orders) for k in range(len(orders) + 1)]
    eps_fn, done = _Eps(denoiser), 0
    for k, order in enumerate(orders):
        eps = eps_fn(x, ts[k])
        x0 = eps_fn.last_x0
        x = _solver_step(eps_fn, x, ts[k], ts[k + 1], order, eps)
        done += order
        if callback is not None:
            callback(min(done, nfe), nfe, x0)
    return x


class _PID:
    """PID step-size control (Söderlind 2003) on the inverse error, with an arctan limiter."""

    def __init__(self, h: float, order: float, p: float = 0.0, i: float = 1.0, d: float = 0.0,
                 safety: float = 0.81) -> None:
        self.h, self.safety = h, safety
        self.b = ((p + i + d) / order, -(p + 2 * d) / order, d / order)
        self.errs: list[float] = []

    def accept(self, error: float) -> bool:
        """Rescale the step for ``error`` (1 = at tolerance); True when the step taken is kept."""
        inv = 1.0 / (error + 1e-8)
        if not self.errs:
            self.errs = [inv, inv, inv]
        self.errs[0] = inv
        factor = self.errs[0] ** self.b[0] * self.errs[1] ** self.b[1] * self.errs[2] ** self.b[2]
        factor = 1 + math.atan(factor - 1)
        ok = factor >= self.safety
        if ok:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return ok


def sample_dpm_adaptive(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        generator: torch.Generator, callback: StepCallback, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.05, max_evals: int = 2000, pcoeff: float = 0.0,
                        icoeff: float = 1.0, dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0,
                        s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-23 with adaptive steps between the schedule's first and smallest nonzero sigma: each step compares
    the 2nd- and 3rd-order solutions (sharing evaluations) and a PID controller sizes the next step. Only the
    schedule's end points are used; progress is reported as the fraction of log sigma covered. ``pcoeff``,
    ``icoeff``, ``dcoeff`` and ``accept_safety`` tune the controller; ``eta`` > 0 makes each accepted step
    ancestral (solve to sigma_down, add ``s_noise`` * sigma_up of fresh noise)."""
    import torch

    sig = floats(sigmas)
    if len(sig) <= 1:
        return x
    smax, smin = _range(sig)
    s, t_end = -math.log(smax), -math.log(smin)
    total = len(sig) - 1
    pid, eps_fn, x_prev, evals = _PID(h_init, order, pcoeff, icoeff, dcoeff, accept_safety), _Eps(denoiser), x, 0
    while s < t_end - 1e-5:
        if evals >= max_evals:
            raise RuntimeError(f"dpm_adaptive took {evals} model evaluations without reaching the end; use dpm_fast "
                               "or dpmpp_2m")
        t = min(t_end, s + pid.h)
        t_solve, up = t, 0.0
        if eta:
            down, _ = ancestral_step(math.exp(-s), math.exp(-t), eta)
            t_solve = min(t_end, -math.log(down))
            up = math.sqrt(max(math.exp(-2 * t) - math.exp(-2 * t_solve), 0.0))
        eps = eps_fn(x, s)
        x0 = eps_fn.last_x0
        if order == 2:
            low = _solver_step(eps_fn, x, s, t_solve, 1, eps)
            high = _solver_step(eps_fn, x, s, t_solve, 2, eps)
        else:
            low = _solver_step(eps_fn, x, s, t_solve, 2, eps, r1=1 / 3)
            high = _solver_step(eps_fn, x, s, t_solve, 3, eps)
        evals += order
        scale = torch.clamp(rtol * torch.maximum(low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((low - high) / scale)) / low.numel() ** 0.5
        if pid.accept(error):
            x_prev, x, s = low, high, t
            if up > 0:
                x = x + gaussian(x, generator) * (s_noise * up)
            if callback is not None:
                callback(max(1, min(total, round(total * (s + math.log(smax)) / (t_end + math.log(smax))))),
                         total, x0)
    return x


def sample_dpmpp_2s_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                              generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                              s_noise: float = 1.0, cfg_pp: bool = False) -> torch.Tensor:
    """DPM-Solver++(2S) single-step (midpoint in log sigma) to sigma_down, then ancestral noise of scale sigma_up;
    with ``cfg_pp`` the steps follow the unconditional noise estimate (CFG++)."""
    form = flow_form(denoiser)
    if form is not None and not cfg_pp:  # rectified flow (ComfyUI runs the CFG++ form as written below)
        return rf_ancestral.dpmpp_2s_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, eta=eta,
                                               s_noise=s_noise, form=form)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i]) if cfg_pp else (denoiser(x, sig[i]), None)
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        # CFG++: the x0 that renoises is the guided one, the noise direction the unconditional one.
        base = x if uncond is None else x + (denoised - uncond)
        if down == 0:
            x = denoised
        else:
            t, t_next = -math.log(sig[i]), -math.log(down)
            h = t_next - t
            mid = math.exp(-(t + h / 2))
            x_2 = (mid / sig[i]) * base - math.expm1(-h / 2) * denoised
            denoised_2 = denoiser(x_2, mid)
            x = (down / sig[i]) * base - math.expm1(-h) * denoised_2
        if sig[i + 1] > 0 and up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        steps.done(i, denoised)
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                     generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral with CFG++."""
    return sample_dpmpp_2s_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, cfg_pp=True)


def sample_dpmpp_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                     generator: torch.Generator, callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0,
                     r: float = 0.5, on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++ stochastic single-step: an ancestral DPM++ step to the intermediate point (fraction ``r`` of the
    step in log sigma), then the 2nd-order combination, each with Brownian-tree noise; Euler on the step to 0."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_sde.dpmpp_sde(denoiser, x, sigmas, form, generator=generator, callback=callback, eta=eta,
                                s_noise=s_noise, r=r, on_device=on_device)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    if len(sig) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    fac = 1 / (2 * r)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        if sig[i + 1] == 0:
            x = x + to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
        else:
            t, t_next = -math.log(sig[i]), -math.log(sig[i + 1])
            s_mid = math.exp(-(t + r * (t_next - t)))
            down, up = ancestral_step(sig[i], s_mid, eta)
            x_2 = (down / sig[i]) * x + (1 - down / sig[i]) * denoised
            x_2 = x_2 + noise(sig[i], s_mid) * (s_noise * up)
            denoised_2 = denoiser(x_2, s_mid)
            down, up = ancestral_step(sig[i], sig[i + 1], eta)
            mixed = (1 - fac) * denoised + fac * denoised_2
            x = (down / sig[i]) * x + (1 - down / sig[i]) * mixed
            x = x + noise(sig[i], sig[i + 1]) * (s_noise * up)
        steps.done(i, denoised)
    return x


def sample_dpmpp_sde_gpu(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                         generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """dpmpp_sde with its Brownian tree on the model's device."""
    return sample_dpmpp_sde(denoiser, x, sigmas, generator=generator, callback=callback, on_device=True)


def sample_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    generator: torch.Generator, callback: StepCallback, cfg_pp: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M): x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) D, with D the x0 estimate
    extrapolated linearly in log sigma from the previous one (first order on the first and last steps)."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    old: Any = None
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i]) if cfg_pp else (denoiser(x, sig[i]), None)
        base = x if uncond is None else x + (denoised - uncond)
        if sig[i + 1] == 0:
            x = denoised
        else:
            ratio = sig[i + 1] / sig[i]
            h = math.log(sig[i]) - math.log(sig[i + 1])
            mixed = denoised
            if old is not None:
                rr = (math.log(sig[i - 1]) - math.log(sig[i])) / h
                mixed = denoised + (denoised - old) / (2 * rr)
            x = ratio * base + (1 - ratio) * mixed
        old = uncond if cfg_pp else denoised
        steps.done(i, denoised)
    return x


def sample_dpmpp_2m_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++ (the history term uses the unconditional x0, as ComfyUI's)."""
    return sample_dpmpp_2m(denoiser, x, sigmas, generator=generator, callback=callback, cfg_pp=True)


def sample_dpmpp_2m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                        s_noise: float = 1.0, solver_type: str = "midpoint", on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the first-order SDE step x = (sigma_next / sigma) e^(-eta h) x + (1 - e^(-(1+eta) h)) x0,
    a second-order correction from the previous x0 (midpoint or Heun form), and Brownian-tree noise of scale
    sigma_next * sqrt(1 - e^(-2 eta h))."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_sde.dpmpp_2m_sde(denoiser, x, sigmas, form, generator=generator, callback=callback, eta=eta,
                                   s_noise=s_noise, solver_type=solver_type, on_device=on_device)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    if len(sig) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    old: Any = None
    h_last = 0.0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        h = 0.0
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            eta_h = eta * h
            keep = -math.expm1(-h - eta_h)  # 1 - e^(-(1+eta) h)
            x = (sig[i + 1] / sig[i]) * math.exp(-eta_h) * x + keep * denoised
            if old is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (keep / (-h - eta_h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * keep * (1 / r) * (denoised - old)
            if eta:
                x = x + noise(sig[i], sig[i + 1]) * (sig[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise)
        old, h_last = denoised, h
        steps.done(i, denoised)
    return x


def _2m_sde(solver_type: str, on_device: bool) -> Any:
    def run(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
            callback: StepCallback) -> torch.Tensor:
        return sample_dpmpp_2m_sde(denoiser, x, sigmas, generator=generator, callback=callback,
                                   solver_type=solver_type, on_device=on_device)

    run.__doc__ = f"DPM-Solver++(2M) SDE, {solver_type} correction" + (", noise on the model's device" * on_device)
    return run


sample_dpmpp_2m_sde_gpu = _2m_sde("midpoint", True)
sample_dpmpp_2m_sde_heun = _2m_sde("heun", False)
sample_dpmpp_2m_sde_heun_gpu = _2m_sde("heun", True)


def sample_dpmpp_3m_sde(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                        s_noise: float = 1.0, on_device: bool = False) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: the first-order SDE step plus phi_2/phi_3 corrections from the first and second
    divided differences of the last three x0 estimates in log sigma, with Brownian-tree noise."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_sde.dpmpp_3m_sde(denoiser, x, sigmas, form, generator=generator, callback=callback, eta=eta,
                                   s_noise=s_noise, on_device=on_device)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    if len(sig) <= 1:
        return x
    noise = BrownianNoise(x, sigmas, generator, on_device)
    d_1: Any = None
    d_2: Any = None
    h_1 = h_2 = 0.0
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        h = 0.0
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i]) - math.log(sig[i + 1])
            h_eta = h * (eta + 1)
            x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            if d_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                g0, g1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                first = g0 + (g0 - g1) * (r0 / (r0 + r1))
                second = (g0 - g1) / (r0 + r1)
                x = x + phi_2 * first - (phi_2 / h_eta - 0.5) * second
            elif d_1 is not None:
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:
                x = x + noise(sig[i], sig[i + 1]) * (sig[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise)
        d_1, d_2 = denoised, d_1
        h_1, h_2 = h, h_1
        steps.done(i, denoised)
    return x


def sample_dpmpp_3m_sde_gpu(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                            generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """dpmpp_3m_sde with its Brownian tree on the model's device."""
    return sample_dpmpp_3m_sde(denoiser, x, sigmas, generator=generator, callback=callback, on_device=True)
