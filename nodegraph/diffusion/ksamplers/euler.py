"""Euler-family samplers: Euler, Euler ancestral and their CFG++ forms, DDIM (deterministic DDIM is the Euler step
in sigma), Heun, Heun++ (heunpp2), DPM-Solver-2 (dpm_2) and its ancestral form, DDPM and LCM.

Karras et al. 2022 (EDM), "Elucidating the design space", Algorithms 1-2; CFG++: Chung et al. 2024 (the step
follows the unconditional noise estimate from the guided x0); Heun++ as in ComfyUI's heunpp2.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import rf_ancestral
from ._common import Steps, ancestral_step, floats, gaussian, guided_and_uncond, to_d
from .forms import flow_form

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                 callback: StepCallback) -> torch.Tensor:
    """Euler's method on the probability-flow ODE: x += (sigma_next - sigma) * (x - x0) / sigma."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        x = x + to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
        steps.done(i, denoised)
    return x


def sample_euler_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Euler step down to sigma_down, then fresh noise of scale sigma_up (ancestral sampling)."""
    if flow_form(denoiser) is not None:
        return rf_ancestral.euler_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, eta=eta,
                                            s_noise=s_noise)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        x = x + to_d(x, sig[i], denoised) * (down - sig[i])
        if up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        steps.done(i, denoised)
    return x


def sample_euler_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                        generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """Euler with CFG++: renoise the guided x0 along the unconditional noise estimate,
    x = x0_guided + sigma_next * (x - x0_uncond) / sigma."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_ancestral.euler_ancestral_cfg_pp(denoiser, x, sigmas, form, generator=generator,
                                                   callback=callback, eta=0.0, s_noise=0.0)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i])
        x = denoised + to_d(x, sig[i], uncond) * sig[i + 1]
        steps.done(i, denoised)
    return x


def sample_euler_ancestral_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                                  generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                                  s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral with CFG++: the CFG++ step to sigma_down, then noise of scale sigma_up."""
    form = flow_form(denoiser)
    if form is not None:
        return rf_ancestral.euler_ancestral_cfg_pp(denoiser, x, sigmas, form, generator=generator,
                                                   callback=callback, eta=eta, s_noise=s_noise)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i])
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        x = denoised + to_d(x, sig[i], uncond) * down
        if up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        steps.done(i, denoised)
    return x


def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                callback: StepCallback) -> torch.Tensor:
    """Heun's method (EDM Algorithm 1): an Euler predictor, then the trapezoidal corrector; Euler on the step to 0."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        d = to_d(x, sig[i], denoised)
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sig[i + 1], denoiser(x_2, sig[i + 1]))
            x = x + (d + d_2) * (dt / 2)
        steps.done(i, denoised)
    return x


def sample_heunpp2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                   generator: torch.Generator, callback: StepCallback) -> torch.Tensor:
    """Heun++: the slope is a weighted mean of the slopes at the next one or two schedule points (reached by Euler
    sub-steps), weighted by those sigmas over (2 or 3) * sigma_max; Euler on the last step."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    end, n = sig[-1], len(sig)
    for i in range(n - 1):
        denoised = denoiser(x, sig[i])
        d = to_d(x, sig[i], denoised)
        dt = sig[i + 1] - sig[i]
        if sig[i + 1] == end:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sig[i + 1], denoiser(x_2, sig[i + 1]))
            if i + 2 < n and sig[i + 2] != end:
                x_3 = x_2 + d_2 * (sig[i + 2] - sig[i + 1])
                d_3 = to_d(x_3, sig[i + 2], denoiser(x_3, sig[i + 2]))
                w2, w3 = sig[i + 1] / (3 * sig[0]), sig[i + 2] / (3 * sig[0])
                x = x + (d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3) * dt
            else:
                w2 = sig[i + 1] / (2 * sig[0])
                x = x + (d * (1 - w2) + d_2 * w2) * dt
        steps.done(i, denoised)
    return x


def _mid(a: float, b: float) -> float:
    return math.exp((math.log(a) + math.log(b)) / 2)


def sample_dpm_2(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                 callback: StepCallback) -> torch.Tensor:
    """DPM-Solver-2 in sigma (EDM's 2nd-order midpoint form): the slope at the log-midpoint sigma carries the step."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        d = to_d(x, sig[i], denoised)
        if sig[i + 1] == 0:
            x = x + d * (sig[i + 1] - sig[i])
        else:
            mid = _mid(sig[i], sig[i + 1])
            x_2 = x + d * (mid - sig[i])
            x = x + to_d(x_2, mid, denoiser(x_2, mid)) * (sig[i + 1] - sig[i])
        steps.done(i, denoised)
    return x


def sample_dpm_2_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                           generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 to sigma_down, then fresh noise of scale sigma_up."""
    if flow_form(denoiser) is not None:
        return rf_ancestral.dpm_2_ancestral(denoiser, x, sigmas, generator=generator, callback=callback, eta=eta,
                                            s_noise=s_noise)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        d = to_d(x, sig[i], denoised)
        if down == 0:
            x = x + d * (down - sig[i])
        else:
            mid = _mid(sig[i], down)
            x_2 = x + d * (mid - sig[i])
            x = x + to_d(x_2, mid, denoiser(x_2, mid)) * (down - sig[i])
        if up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        steps.done(i, denoised)
    return x


def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                callback: StepCallback) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020): draw from the Gaussian posterior q(x_next | x, x0) with
    alpha_bar = 1 / (1 + sigma^2), written in k-diffusion form (x = x0 + sigma * noise)."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, s_next = sig[i], sig[i + 1]
        if s_next == 0:
            x = denoised
        else:
            # In VP form x_vp = x / sqrt(1 + s^2): mean = c0 * x0 + c1 * x_vp, variance (1-ab_n)/(1-ab) * beta.
            ab, ab_next = 1 / (1 + s * s), 1 / (1 + s_next * s_next)
            beta = 1 - ab / ab_next
            c0 = math.sqrt(ab_next) * beta / (1 - ab)
            c1 = math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab)
            var = (1 - ab_next) / (1 - ab) * beta
            x_vp = c0 * denoised + c1 * x * math.sqrt(ab) + gaussian(x, generator) * math.sqrt(var)
            x = x_vp / math.sqrt(ab_next)
        steps.done(i, denoised)
    return x


def sample_lcm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
               callback: StepCallback) -> torch.Tensor:
    """Latent-consistency sampling (Luo et al. 2023): jump to the x0 estimate, then renoise to the next sigma."""
    if flow_form(denoiser) is not None:
        return rf_ancestral.lcm(denoiser, x, sigmas, generator=generator, callback=callback)
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        x = denoised
        if sig[i + 1] > 0:
            x = x + gaussian(x, generator) * sig[i + 1]
        steps.done(i, denoised)
    return x
