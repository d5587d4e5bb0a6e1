"""Rectified-flow forms of the ancestral samplers (x = (1 - sigma) x0 + sigma * noise), as ComfyUI runs them on CONST
models: Euler ancestral, DPM-Solver-2 ancestral, DPM-Solver++(2S) ancestral, the Euler CFG++ pair and LCM.

Ancestral steps go deterministically to sigma_down = sigma_next (1 + (sigma_next / sigma - 1) eta), rescale the
signal by (1 - sigma_next) / (1 - sigma_down) and add fresh noise so that the state is again a rectified-flow
mixture at sigma_next (``forms.rf_ancestral``). The CFG++ Euler pair works in the half log-SNR: the
variance-exploding-equivalent sigmas sigma / alpha carry k-diffusion's ancestral split, alpha = 1 - sigma scales
the x0 estimate. LCM renoises as (1 - sigma_next) x0 + sigma_next * noise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ._common import Steps, floats, gaussian, guided_and_uncond, to_d
from .forms import ancestral_ve, rf_ancestral

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def euler_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                    callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral on a rectified flow: x = (d/s) x + (1 - d/s) x0 at sigma_down d, then rescale and renoise."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, s_next = sig[i], sig[i + 1]
        if s_next == 0:
            x = denoised
        else:
            down, rescale, renoise = rf_ancestral(s, s_next, eta)
            ratio = down / s
            x = ratio * x + (1 - ratio) * denoised
            if eta > 0:
                x = rescale * x + gaussian(x, generator) * (s_noise * renoise)
        steps.done(i, denoised)
    return x


def dpm_2_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                    callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver-2 (log-midpoint slope) to the rectified-flow sigma_down, then rescale and renoise."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, s_next = sig[i], sig[i + 1]
        down, rescale, renoise = rf_ancestral(s, s_next, eta)
        d = to_d(x, s, denoised)
        if down == 0:
            x = x + d * (down - s)
        else:
            mid = math.exp((math.log(s) + math.log(down)) / 2)
            x_2 = x + d * (mid - s)
            x = x + to_d(x_2, mid, denoiser(x_2, mid)) * (down - s)
            if eta > 0:
                x = rescale * x + gaussian(x, generator) * (s_noise * renoise)
        steps.done(i, denoised)
    return x


def dpmpp_2s_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
                       callback: StepCallback, eta: float = 1.0, s_noise: float = 1.0, form: Any = None) -> torch.Tensor:
    """DPM-Solver++(2S) on a rectified flow: the x0 estimate at the half-log-SNR midpoint between sigma and
    sigma_down (0.9999 from sigma 1) carries the step x = (d/s) x + (1 - d/s) x0_mid; then rescale and renoise."""
    from .forms import RectifiedFlow

    form = form or RectifiedFlow()
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        s, s_next = sig[i], sig[i + 1]
        down, rescale, renoise = rf_ancestral(s, s_next, eta)
        if s_next == 0:
            x = x + to_d(x, s, denoised) * (down - s)
        else:
            if s == 1.0:
                mid = 0.9999
            else:
                lam_s = form.lam(s)
                mid = form.sigma(lam_s + 0.5 * (form.lam(down) - lam_s))
            u = (mid / s) * x + (1 - mid / s) * denoised
            mixed = denoiser(u, mid)
            x = (down / s) * x + (1 - down / s) * mixed
        if s_next > 0 and eta > 0:
            x = rescale * x + gaussian(x, generator) * (s_noise * renoise)
        steps.done(i, denoised)
    return x


def euler_ancestral_cfg_pp(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, form: Any, *,
                           generator: torch.Generator, callback: StepCallback, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    """Euler ancestral with CFG++ in the half log-SNR: the unconditional noise direction d = (x - alpha_s x0_u) / s,
    k-diffusion's split of the sigmas sigma / alpha, x = alpha_next x0 + alpha_next sigma_down d + noise
    alpha_next sigma_up (eta 0: euler_cfg_pp)."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised, uncond = guided_and_uncond(denoiser, x, sig[i])
        s, s_next = sig[i], sig[i + 1]
        if s_next == 0:
            x = denoised
        else:
            a_s, a_t = form.alpha(s), form.alpha(s_next)
            d = to_d(x, s, a_s * uncond)
            down, up = ancestral_ve(s / a_s if a_s > 0 else math.inf, s_next / a_t, eta)
            x = a_t * denoised + d * (a_t * down)
            if eta > 0 and s_noise > 0:
                x = x + gaussian(x, generator) * (a_t * s_noise * up)
        steps.done(i, denoised)
    return x


def lcm(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator: torch.Generator,
        callback: StepCallback) -> torch.Tensor:
    """LCM on a rectified flow: jump to x0, then renoise as (1 - sigma_next) x0 + sigma_next * noise."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        x = denoised
        if sig[i + 1] > 0:
            x = gaussian(x, generator) * sig[i + 1] + (1.0 - sig[i + 1]) * x
        steps.done(i, denoised)
    return x
