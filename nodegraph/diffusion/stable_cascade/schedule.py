"""ComfyUI's StableCascadeSampling: the cosine noise schedule (s = 0.008) with a log-SNR shift, model time in [0, 1].

alpha_bar(t) = cos²((t + s) / (1 + s) · π/2) / cos²(s / (1 + s) · π/2), shifted by ``shift`` (log-SNR minus
2·ln(shift)), clamped to [1e-4, 0.9999]; sigma = sqrt((1 - alpha_bar) / alpha_bar). The UNet is called at
``timestep(sigma)`` (the cosine's inverse, unshifted), on ``x / sqrt(sigma² + 1)``, and predicts the noise (ComfyUI's
EPS). Stage C samples with shift 2, stage B with shift 1 (ComfyUI's ``sampling_settings``); ModelSamplingStableCascade
changes it. The table has 10000 entries at t = (i + 1) / 10000, float32 as ComfyUI stores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..flow.schedule import FlowSettings

COSINE_S = 8e-3
TABLE_SIZE = 10000


def _init_alpha() -> float:
    import torch

    s = torch.tensor(COSINE_S)
    return float(torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2)


@dataclass(frozen=True)
class CascadeSigmas(FlowSettings):
    """StableCascadeSampling as BasicScheduler, KSampler and percent_to_sigma read it."""

    kind: str = "stable_cascade"
    shift: float = 1.0
    multiplier: float = 1.0

    @property
    def timesteps(self) -> int:
        """Entries of the sigma table."""
        return TABLE_SIZE

    def _alpha_bar(self, t: Any) -> Any:
        import torch

        t = torch.as_tensor(t, dtype=torch.float32)
        s = torch.tensor(COSINE_S)
        init = torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2
        alpha = torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / init
        if self.shift != 1.0:
            log_snr = (alpha / (1 - alpha)).log() + 2 * torch.log(1.0 / torch.tensor(float(self.shift)))
            alpha = log_snr.sigmoid()
        return alpha.clamp(0.0001, 0.9999)

    def sigma(self, t: Any) -> Any:
        """The sigma at model time ``t`` (float64 numpy, computed in float32 as ComfyUI does)."""
        import numpy as np

        alpha = self._alpha_bar(np.asarray(t, dtype=np.float32))
        return (((1 - alpha) / alpha) ** 0.5).double().numpy()

    def timestep(self, sigma: Any) -> Any:
        """The UNet's time in [0, 1] at ``sigma`` (the unshifted cosine's inverse, float32 as ComfyUI)."""
        import numpy as np
        import torch

        sigma = torch.as_tensor(np.asarray(sigma, dtype=np.float32))
        var = (1 / (sigma * sigma + 1)).clamp(0, 1.0)
        s, min_var = torch.tensor(COSINE_S), torch.tensor(_init_alpha())
        t = (((var * min_var) ** 0.5).acos() / (torch.pi * 0.5)) * (1 + s) - s
        return t.double().numpy()

    def table(self) -> Any:
        """The ascending sigma table (float32 values as float64 numpy)."""
        import numpy as np

        t = np.arange(1, TABLE_SIZE + 1, dtype=np.float64) / TABLE_SIZE
        return np.asarray(self.sigma(t.astype(np.float32)), dtype=np.float32).astype(np.float64)

    @property
    def sigma_max(self) -> float:
        """The largest sigma of the table (t = 1)."""
        return float(self.sigma(1.0))

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's StableCascadeSampling.percent_to_sigma."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(1.0 - percent))


def c_in(sigma: float) -> float:
    """ComfyUI's EPS input scaling 1 / sqrt(sigma² + 1)."""
    return 1.0 / math.sqrt(sigma * sigma + 1.0)


__all__ = ["COSINE_S", "TABLE_SIZE", "CascadeSigmas", "c_in"]
