"""Euler-family samplers: Euler, Euler ancestral and their CFG++ forms, DDIM (deterministic DDIM is the Euler step
in sigma), Heun, Heun++ (heunpp2), DPM-Solver-2 (dpm_2) and its ancestral form, DDPM and LCM.

Karras et al. 2022 (EDM), "Elucidating the design space", Algorithms 1-2; CFG++: Chung et al. 2024.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._common import Steps, ancestral_step, floats, gaussian, guided_and_uncond, to_d

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def sample_euler(denoiser: "Denoiser", x: "torch.Tensor", sigmas: "torch.Tensor", *, generator: "torch.Generator",
                 callback: "StepCallback") -> "torch.Tensor":
    """Euler's method on the probability-flow ODE: x += (sigma_next - sigma) * (x - x0) / sigma."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        x = x + to_d(x, sig[i], denoised) * (sig[i + 1] - sig[i])
        steps.done(i, denoised)
    return x


def sample_euler_ancestral(denoiser: "Denoiser", x: "torch.Tensor", sigmas: "torch.Tensor", *,
                           generator: "torch.Generator", callback: "StepCallback", eta: float = 1.0,
                           s_noise: float = 1.0) -> "torch.Tensor":
    """Euler step down to sigma_down, then fresh noise of scale sigma_up (ancestral sampling)."""
    steps, sig = Steps(sigmas, callback), floats(sigmas)
    for i in range(len(sig) - 1):
        denoised = denoiser(x, sig[i])
        down, up = ancestral_step(sig[i], sig[i + 1], eta)
        x = x + to_d(x, sig[i], denoised) * (down - sig[i])
        if up > 0:
            x = x + gaussian(x, generator) * (s_noise * up)
        steps.done(i, denoised)
    return x
