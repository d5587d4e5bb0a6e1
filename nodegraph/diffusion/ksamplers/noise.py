"""Noise for the stochastic samplers: Gaussian draws from the seed's generator, and Brownian-tree noise (torchsde)
whose increments are consistent whatever step sizes query it, as the DPM++ SDE samplers use.

``_gpu`` samplers build their Brownian tree on the model's device; the others on the CPU (the same numbers on
every device). On a CPU-only machine both are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def seed_from(generator: torch.Generator) -> int:
    """A 62-bit seed drawn from ``generator`` (so a sampler's noise follows the KSampler seed)."""
    import torch

    return int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())


class BrownianNoise:
    """Unit-variance noise for the step sigma -> sigma_next from one Brownian motion over [sigma_min, sigma_max]:
    W(sigma_next) - W(sigma), normalised by sqrt(|sigma_next - sigma|)."""

    def __init__(self, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator,
                 on_device: bool = False) -> None:
        import torch
        import torchsde

        positive = sigmas[sigmas > 0]
        lo, hi = float(positive.min()), float(sigmas.max())
        if hi <= lo:
            hi = lo + 1.0
        self.device = x.device if on_device else torch.device("cpu")
        self.dtype = x.dtype
        self.out_device = x.device
        w0 = torch.zeros(tuple(x.shape), dtype=torch.float32, device=self.device)
        self._t = lambda v: torch.tensor(float(v), dtype=torch.float32, device=self.device)
        self.tree = torchsde.BrownianTree(t0=self._t(lo), w0=w0, t1=self._t(hi), entropy=seed_from(generator))
        self.lo, self.hi = lo, hi

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        """Standard normal noise for the step from ``sigma`` to ``sigma_next`` (both within the tree's range)."""
        a, b = sorted((min(max(float(sigma), self.lo), self.hi), min(max(float(sigma_next), self.lo), self.hi)))
        if b - a <= 0:
            import torch

            return torch.zeros_like(self.tree(self._t(self.lo), self._t(self.hi))).to(self.out_device, self.dtype)
        w = self.tree(self._t(a), self._t(b)) / (b - a) ** 0.5
        return w.to(self.out_device, self.dtype)


class GaussianNoise:
    """Fresh standard normal noise per call, drawn from the seed's CPU generator in float32."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator) -> None:
        self.x, self.generator = x, generator

    def __call__(self, sigma: float = 0.0, sigma_next: float = 0.0) -> torch.Tensor:
        """Standard normal noise shaped like the latent (the sigmas are ignored)."""
        from ._common import gaussian

        return gaussian(self.x, self.generator)
