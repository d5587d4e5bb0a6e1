"""ComfyUI's KSampler samplers in the k-diffusion convention (``custom.SamplerFn``), written from their papers.

``KSAMPLERS`` maps every ComfyUI ``sampler_name`` to a function ``(denoiser, x, sigmas, *, generator, callback)
-> latent``; KSampler runs the names without a faithful diffusers scheduler through it, and custom sampling
(KSamplerSelect) offers all of them.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from . import euler

if TYPE_CHECKING:
    from ..custom import SamplerFn

_TABLE: dict[str, "SamplerFn"] = {
    "euler": euler.sample_euler,
    "euler_ancestral": euler.sample_euler_ancestral,
}

#: Read-only: sampler_name → k-diffusion-convention sampler function.
KSAMPLERS: Mapping[str, "SamplerFn"] = MappingProxyType(_TABLE)


def k_sampler(name: str) -> "SamplerFn":
    """The k-diffusion-convention sampler called ``name``; ValueError naming the choices when unknown."""
    try:
        return KSAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(KSAMPLERS)}") from None
