"""Flow-matching noise levels with ComfyUI's semantics: the model's sigma table, its shift, and the schedulers.

A flow model sees x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in (0, 1], and predicts the velocity
noise - x0; the clean estimate is x0 = x - sigma * v (ComfyUI's ``CONST``). Two ways to spread sigma over time:

- ``flux`` (ComfyUI's ModelSamplingFlux): sigma(t) = e^shift / (e^shift + 1/t - 1), the model's timestep is sigma
  itself. The ModelSamplingFlux node sets ``shift`` from the image size (base_shift at 256 latent tokens, max_shift
  at 4096), which equals diffusers' dynamic shifting ``mu``; without it Flux.1-dev uses 1.15 and schnell 1.0.
- ``discrete`` (ComfyUI's ModelSamplingDiscreteFlow, SD3/AuraFlow): sigma(t) = shift t' / (1 + (shift - 1) t'),
  t' = t / multiplier, timestep = sigma * multiplier.

The table holds sigma at t = 1/10000 … 1 (flux) or 1/1000 … 1 (discrete), ascending, as ComfyUI builds it, and the
schedulers (simple, normal, karras, exponential, sgm_uniform, ddim_uniform, beta, linear_quadratic, kl_optimal) are
computed on it exactly as ComfyUI computes them on any model (so "normal" maps through timestep/sigma like ComfyUI).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The schedulers that apply to flow models (all of ComfyUI's KSampler schedulers).
FLOW_SCHEDULES = ("simple", "normal", "karras", "exponential", "sgm_uniform", "ddim_uniform", "beta",
                  "linear_quadratic", "kl_optimal")


@dataclass(frozen=True)
class FlowSettings:
    """How a flow model maps time to noise: ``kind`` "flux" or "discrete", ``shift``, ``multiplier`` (discrete);
    ``skip_layer_guidance`` (SD3.5) rides along as a sampling setting of the model."""

    kind: str = "flux"
    shift: float = 1.15
    multiplier: float = 1000.0
    #: SkipLayerGuidanceSD3: (blocks, scale, start_percent, end_percent), or () when off
    skip_layer_guidance: tuple = ()

    def percent_to_sigma(self, percent: float) -> float:
        """The noise level at ``percent`` of the way through sampling (ComfyUI's percent_to_sigma)."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        t = 1.0 - percent
        return float(self.sigma(t if self.kind == "flux" else t * self.multiplier))

    @property
    def timesteps(self) -> int:
        """Entries of the sigma table."""
        return 10000 if self.kind == "flux" else 1000

    def sigma(self, t: Any) -> Any:
        """Noise level at model time ``t`` (numpy array or float)."""
        import numpy as np

        t = np.asarray(t, dtype=np.float64)
        if self.kind == "flux":
            with np.errstate(divide="ignore"):
                return math.exp(self.shift) / (math.exp(self.shift) + (1.0 / t - 1.0))
        tt = t / self.multiplier
        if self.shift == 1.0:
            return tt
        return self.shift * tt / (1 + (self.shift - 1) * tt)

    def timestep(self, sigma: Any) -> Any:
        """The model time of noise level ``sigma`` (ComfyUI: sigma for flux, sigma * multiplier otherwise)."""
        import numpy as np

        sigma = np.asarray(sigma, dtype=np.float64)
        return sigma if self.kind == "flux" else sigma * self.multiplier

    def table(self) -> Any:
        """The ascending sigma table (float32 as ComfyUI stores it, returned as float64 numpy)."""
        import numpy as np
        import torch

        n = self.timesteps
        if self.kind == "flux":
            t = (torch.arange(1, n + 1, 1) / n).double().numpy()
        else:
            t = (torch.arange(1, n + 1, 1) / n * self.multiplier).double().numpy()
        return np.asarray(self.sigma(t), dtype=np.float32).astype(np.float64)


def edm_percent_to_sigma(percent: float, sigma_min: float, sigma_max: float) -> float:
    """ComfyUI's ModelSamplingContinuousEDM.percent_to_sigma: log-linear from ``sigma_max`` (0%) to ``sigma_min``."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    low = math.log(sigma_min)
    return math.exp((math.log(sigma_max) - low) * (1.0 - percent) + low)


def flux_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """ModelSamplingFlux's shift for an image size (linear in latent tokens: base at 256, max at 4096)."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return (width * height / (8 * 8 * 2 * 2)) * slope + (base_shift - slope * 256)


def flow_sigmas(schedule: str, steps: int, settings: FlowSettings) -> Any:
    """``steps + 1`` descending sigmas ending with 0 for ComfyUI scheduler ``schedule`` (float64 numpy)."""
    from ..schedulers import schedule_sigmas

    out = schedule_sigmas(schedule, steps, settings.table(), settings.timestep, settings.sigma)
    if out is None:
        raise ValueError(f"scheduler {schedule!r} does not apply to flow-matching models; choose one of: "
                         f"{', '.join(FLOW_SCHEDULES)}")
    return out


__all__ = ["FLOW_SCHEDULES", "FlowSettings", "edm_percent_to_sigma", "flow_sigmas", "flux_shift"]
