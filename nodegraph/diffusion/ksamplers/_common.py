"""Shared pieces of the k-diffusion-convention samplers: the denoised/derivative helpers, ancestral steps, the
guided + unconditional pair CFG++ needs, and step bookkeeping.

Conventions (``custom.SamplerFn``): ``x`` is x0 + sigma * noise, ``sigmas`` descends and ends with 0 (or with the
sigma to stop at), ``denoiser(x, sigma)`` is the guided x0 estimate, ``generator`` is a CPU ``torch.Generator``
and ``callback(i + 1, len(sigmas) - 1, x0)`` follows every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..custom import Denoiser, StepCallback


def to_d(x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - x0) / sigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up): step deterministically to sigma_down, then add sigma_up of fresh noise, so that the
    variance at sigma_next is right (Karras et al. 2022 / k-diffusion's ancestral split)."""
    if not sigma_next or not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(max(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2, 0.0)))
    return math.sqrt(max(sigma_next ** 2 - up ** 2, 0.0)), up


def guided_and_uncond(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided x0, unconditional x0) from one evaluation, for CFG++; the unconditional one is the positive
    prediction when the denoiser has no negative side (cfg 1)."""
    cond, uncond = denoiser.split(x, sigma)
    if uncond is None:
        return cond, cond
    return uncond + denoiser.cfg * (cond - uncond), uncond


def gaussian(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the CPU from ``generator`` in float32 (the same numbers
    on every device), then moved to ``x``'s device and dtype."""
    import torch

    return torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32).to(x.device, x.dtype)


def floats(sigmas: torch.Tensor) -> list[float]:
    """The schedule as Python floats (float64 arithmetic for the step coefficients)."""
    return [float(s) for s in sigmas]


class Steps:
    """Step bookkeeping: ``done(i, x0)`` reports step ``i`` (0-based) to the callback."""

    def __init__(self, sigmas: torch.Tensor, callback: StepCallback | None) -> None:
        self.total = len(sigmas) - 1
        self.callback = callback

    def done(self, i: int, x0: torch.Tensor) -> None:
        """Report step ``i`` finished with clean-latent estimate ``x0``."""
        if self.callback is not None:
            self.callback(i + 1, self.total, x0)


def gauss_legendre(a: float, b: float, fn: Callable[[Any], Any], nodes: int = 24) -> float:
    """The integral of ``fn`` (vectorised over numpy arrays) from ``a`` to ``b`` by Gauss-Legendre quadrature: exact
    for polynomials of degree < 2 * nodes, and to machine precision for the smooth kernels the solvers integrate."""
    import numpy as np

    t, w = np.polynomial.legendre.leggauss(nodes)
    mid, half = (a + b) / 2.0, (b - a) / 2.0
    return float(half * np.sum(w * fn(mid + half * t)))


def lagrange(points: list[float], j: int) -> Callable[[Any], Any]:
    """The Lagrange basis polynomial of ``points`` that is 1 at ``points[j]`` and 0 at the others."""

    def basis(t: Any) -> Any:
        out = 1.0
        for k, p in enumerate(points):
            if k != j:
                out = out * (t - p) / (points[j] - p)
        return out

    return basis


def expm1(z: float) -> float:
    """e^z - 1 (accurate for small z)."""
    return math.expm1(z)


def phi2(z: float) -> float:
    """(e^z - 1 - z) / z, the h·phi_2-type kernel of exponential integrators (1 at z = 0 limit is 0)."""
    return (math.expm1(z) - z) / z if z else 0.0
