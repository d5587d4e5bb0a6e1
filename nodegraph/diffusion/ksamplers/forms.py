"""How a model mixes noise into the latent, for the samplers whose maths depends on it.

- Variance exploding (the k-diffusion convention, UNets): x = x0 + sigma * noise. A denoiser that declares nothing
  is this form, and the samplers run their original code path.
- Rectified flow (ComfyUI's CONST model sampling: Flux, SD3, Qwen-Image, Wan, LTX, …): x = (1 - sigma) x0 +
  sigma * noise. A denoiser declares it with a ``noise_form`` attribute holding a ``RectifiedFlow``; the
  stochastic samplers then use their rectified-flow forms (ancestral steps that rescale the signal, SDE solvers in
  the half log-SNR lambda = log(alpha / sigma) with alpha = 1 - sigma).

Both forms share one interface (``lam``, ``sigma``, ``alpha``, ``offset``, ``percent_to_sigma``) so the general
half-log-SNR solvers in ``rf_*`` run on either (tests compare them with the variance-exploding code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The attribute a denoiser sets to declare its noise form.
ATTRIBUTE = "noise_form"


def _unshifted(percent: float) -> float:
    return min(1.0, max(0.0, 1.0 - percent))


@dataclass(frozen=True)
class RectifiedFlow:
    """x = (1 - sigma) x0 + sigma * noise; ``percent_to_sigma`` is the model's (its shift), for the first-sigma
    offset and SA-Solver's stochastic interval."""

    percent_to_sigma: Callable[[float], float] = field(default=_unshifted)

    def lam(self, sigma: float) -> float:
        """The half log-SNR log((1 - sigma) / sigma) (+inf at sigma 0, -inf at sigma 1)."""
        if sigma <= 0:
            return math.inf
        if sigma >= 1:
            return -math.inf
        return math.log((1.0 - sigma) / sigma)

    def sigma(self, lam: float) -> float:
        """The noise level at half log-SNR ``lam``: 1 / (1 + e^lam)."""
        if lam > 0:
            e = math.exp(-lam)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(lam))

    def alpha(self, sigma: float) -> float:
        """The signal scale 1 - sigma."""
        return 1.0 - sigma

    def offset(self, sig: list[float]) -> list[float]:
        """A first sigma of 1 (or more) moved to the model's sigma at 0.01% of sampling (finite log-SNR)."""
        if len(sig) > 1 and sig[0] >= 1:
            return [float(self.percent_to_sigma(1e-4)), *sig[1:]]
        return sig


@dataclass(frozen=True)
class VarianceExploding:
    """x = x0 + sigma * noise: lambda = -log(sigma), alpha = 1 (the general solvers' reference form)."""

    percent_to_sigma: Callable[[float], float] | None = None

    def lam(self, sigma: float) -> float:
        """The half log-SNR -log(sigma)."""
        return math.inf if sigma <= 0 else -math.log(sigma)

    def sigma(self, lam: float) -> float:
        """e^-lam."""
        return math.exp(-lam)

    def alpha(self, sigma: float) -> float:
        """1: the signal is not scaled."""
        return 1.0

    def offset(self, sig: list[float]) -> list[float]:
        """The schedule unchanged."""
        return sig


def rectified_flow_of(model: Any) -> RectifiedFlow:
    """The rectified-flow noise form of a flow MODEL, with its own percent_to_sigma when it has flow settings (for
    the denoisers of the video families with their own loops: Wan, LTX-Video, LTX-2)."""
    settings = getattr(model, "flow", None)
    return RectifiedFlow() if settings is None else RectifiedFlow(settings.percent_to_sigma)


def flow_form(denoiser: Any) -> RectifiedFlow | None:
    """The denoiser's ``RectifiedFlow`` form, or None when it samples a variance-exploding model."""
    form = getattr(denoiser, ATTRIBUTE, None)
    return form if isinstance(form, RectifiedFlow) else None


class _Declared:
    """A denoiser seen with a declared noise form (every other attribute is the wrapped denoiser's)."""

    def __init__(self, inner: Any, form: RectifiedFlow) -> None:
        self._inner, self.noise_form = inner, form

    def __call__(self, x: Any, sigma: Any) -> Any:
        return self._inner(x, sigma)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def as_flow_sampler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run on a rectified-flow model: a denoiser that declares no noise form is taken as ``RectifiedFlow``
    (with its ``flow.percent_to_sigma`` when it has one), so flow loops whose denoisers predate the attribute get
    the rectified-flow maths."""

    def run(denoiser: Any, x: Any, sigmas: Any, **kwargs: Any) -> Any:
        if getattr(denoiser, ATTRIBUTE, None) is None:
            settings = getattr(denoiser, "flow", None)
            to_sigma = getattr(settings, "percent_to_sigma", None)
            denoiser = _Declared(denoiser, RectifiedFlow(to_sigma) if callable(to_sigma) else RectifiedFlow())
        return fn(denoiser, x, sigmas, **kwargs)

    run.__name__ = getattr(fn, "__name__", "sampler")
    run.__doc__ = getattr(fn, "__doc__", None)
    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def ancestral_ve(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """k-diffusion's (sigma_down, sigma_up) for variance-exploding-equivalent sigmas; a first sigma of +inf (a
    rectified flow's sigma 1) gives the limit (sigma_next * sqrt(1 - eta^2), eta * sigma_next)."""
    if not eta:
        return sigma_next, 0.0
    if math.isinf(sigma):
        up = min(sigma_next, eta * sigma_next)
    else:
        up = min(sigma_next, eta * math.sqrt(max(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2, 0.0)))
    return math.sqrt(max(sigma_next ** 2 - up ** 2, 0.0)), up


def rf_ancestral(sigma: float, sigma_next: float, eta: float) -> tuple[float, float, float]:
    """The rectified-flow ancestral split (sigma_down, signal rescale, renoise): step deterministically to
    sigma_down = sigma_next (1 + (sigma_next / sigma - 1) eta), scale by (1 - sigma_next) / (1 - sigma_down), and add
    renoise = sqrt(sigma_next^2 - sigma_down^2 (1 - sigma_next)^2 / (1 - sigma_down)^2) of fresh noise: the result
    is again (1 - sigma_next) x0 + sigma_next * noise."""
    down = sigma_next * (1.0 + (sigma_next / sigma - 1.0) * eta)
    a_next, a_down = 1.0 - sigma_next, 1.0 - down
    renoise = math.sqrt(max(sigma_next ** 2 - down ** 2 * a_next ** 2 / a_down ** 2, 0.0))
    return down, a_next / a_down, renoise
