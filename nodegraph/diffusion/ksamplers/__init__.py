"""ComfyUI's KSampler samplers in the k-diffusion convention (``custom.SamplerFn``), written from their papers.

``KSAMPLERS`` maps every ComfyUI ``sampler_name`` to a function ``(denoiser, x, sigmas, *, generator, callback)
-> latent``; KSampler runs the names without a faithful diffusers scheduler through it, and custom sampling
(KSamplerSelect) offers all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from . import dpm, euler, multistep, sde, unipc

if TYPE_CHECKING:
    from ..custom import SamplerFn

#: ComfyUI's sampler_name list, in its order (comfy/samplers.py KSAMPLER_NAMES + ddim, uni_pc, uni_pc_bh2).
_MODULES = {"euler": euler, "dpm": dpm, "multistep": multistep, "sde": sde, "unipc": unipc}
_WHERE = {
    "euler": "euler", "euler_cfg_pp": "euler", "euler_ancestral": "euler", "euler_ancestral_cfg_pp": "euler",
    "heun": "euler", "heunpp2": "euler", "exp_heun_2_x0": "sde", "exp_heun_2_x0_sde": "sde", "dpm_2": "euler",
    "dpm_2_ancestral": "euler", "lms": "multistep", "dpm_fast": "dpm", "dpm_adaptive": "dpm",
    "dpmpp_2s_ancestral": "dpm", "dpmpp_2s_ancestral_cfg_pp": "dpm", "dpmpp_sde": "dpm", "dpmpp_sde_gpu": "dpm",
    "dpmpp_2m": "dpm", "dpmpp_2m_cfg_pp": "dpm", "dpmpp_2m_sde": "dpm", "dpmpp_2m_sde_gpu": "dpm",
    "dpmpp_2m_sde_heun": "dpm", "dpmpp_2m_sde_heun_gpu": "dpm", "dpmpp_3m_sde": "dpm", "dpmpp_3m_sde_gpu": "dpm",
    "ddpm": "euler", "lcm": "euler", "ipndm": "multistep", "ipndm_v": "multistep", "deis": "multistep",
    "res_multistep": "multistep", "res_multistep_cfg_pp": "multistep", "res_multistep_ancestral": "multistep",
    "res_multistep_ancestral_cfg_pp": "multistep", "gradient_estimation": "multistep",
    "gradient_estimation_cfg_pp": "multistep", "er_sde": "sde", "seeds_2": "sde", "seeds_3": "sde",
    "sa_solver": "sde", "sa_solver_pece": "sde",
    # ComfyUI's ddim runs Euler (deterministic DDIM is the Euler step in sigma).
    "ddim": "euler", "uni_pc": "unipc", "uni_pc_bh2": "unipc",
}
_ALIASES = {"ddim": "euler"}
_TABLE: dict[str, SamplerFn] = {
    name: getattr(_MODULES[mod], "sample_" + _ALIASES.get(name, name)) for name, mod in _WHERE.items()
}

#: Read-only: sampler_name → k-diffusion-convention sampler function.
KSAMPLERS: Mapping[str, SamplerFn] = MappingProxyType(_TABLE)


def k_sampler(name: str) -> SamplerFn:
    """The k-diffusion-convention sampler called ``name``; ValueError naming the choices when unknown."""
    try:
        return KSAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(KSAMPLERS)}") from None
