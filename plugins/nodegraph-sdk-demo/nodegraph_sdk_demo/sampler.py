"""The demo's sampler and schedule, in nodegraph's plugin-sampler convention (see ``nodegraph.api.SamplerFn``)."""

from __future__ import annotations

import math
from typing import Any

from nodegraph import api

from .nodes import HINT_KEY


def guidance_map(denoiser: api.Denoiser, x: Any) -> Any | None:
    """The per-cell cfg multiplier from the first RegionHint in the positive conditioning (None without one)."""
    for _, extras in denoiser.conditioning:
        hint = extras.get(HINT_KEY)
        if hint:
            lum = api.resample(hint["map"].to(x.device), x.shape[-1], x.shape[-2], "area")
            lum = lum[:1] if lum.shape[0] != x.shape[0] else lum
            return 1.0 + float(hint["strength"]) * (2.0 * lum - 1.0)  # 0 (black) .. 2 (white) at full strength
    return None


def hinted_euler(denoiser: api.Denoiser, x: Any, sigmas: Any, *, generator: Any,
                 callback: api.StepCallback) -> Any:
    """Euler steps; the guidance scale is multiplied per latent cell by the RegionHint map when there is one."""
    scale = guidance_map(denoiser, x)
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
        if scale is None:
            x0 = denoiser(x, sigma)
        else:
            cond, uncond = denoiser.split(x, sigma)
            x0 = cond if uncond is None else uncond + denoiser.cfg * scale * (cond - uncond)
        x = x + (x - x0) / sigma * (nxt - sigma)
        callback(i + 1, steps, x0)
    return x


def cosine_schedule(steps: int, training_sigmas: Any) -> Any:
    """``steps`` sigmas from the largest to the smallest trained one on a cosine curve in log-sigma, then 0."""
    import numpy as np

    hi, lo = math.log(float(training_sigmas[-1])), math.log(float(training_sigmas[0]))
    frac = (1.0 - np.cos(np.linspace(0.0, math.pi, steps))) / 2.0
    return np.append(np.exp(hi + (lo - hi) * frac), 0.0)
