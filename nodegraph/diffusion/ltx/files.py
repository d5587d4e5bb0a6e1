"""LTX-Video transformer files → MODEL (diffusers' ``LTXVideoTransformer3DModel``), and the shipped configs.

Layouts: the original Lightricks release, also ComfyUI's (``patchify_proj``, ``adaln_single``, ``q_norm`` under
``model.diffusion_model.`` or at the root; converted with diffusers' own converter) and diffusers' (``proj_in``,
``time_embed``). The config is read from the tensor shapes (width, depth, caption width); the head width is 64 up
to 2048 wide (the 2B models) and 128 above (13B), as in every release.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError
from ..flow.detect import read_config
from ..types import DiffusionModel, LatentFormat

log = logging.getLogger(__name__)

LTX_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "ltx"
#: The shipped configs (``configs/ltx/<name>.json``).
CONFIG_NAMES = ("transformer_2b", "transformer_13b", "vae_0.9.0", "vae_0.9.1", "vae_0.9.5")
#: LTX-Video's latent space: 128 channels, 32 pixels per cell, 8 frames per latent frame after the first. LATENTs
#: hold the VAE's *normalised* latents (per-channel statistics applied by the VAE), as in ComfyUI.
LTX_LATENT = LatentFormat(channels=128, downscale=32, scaling_factor=1.0, shift_factor=0.0)
TEMPORAL = 8
#: ComfyUI's default noise shift for LTX-Video (ModelSamplingFlux-style, exponential); ModelSamplingLTXV changes it.
DEFAULT_SHIFT = 2.37
_ORIGINAL_MARK = "patchify_proj.weight"
_DIFFUSERS_MARKS = ("proj_in.weight", "time_embed.linear.weight", "caption_projection.linear_1.weight")
_COMFY = "model.diffusion_model."


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped LTX-Video config (``configs/ltx/<name>.json``) without its ``_class_name``."""
    return read_config(LTX_CONFIGS, name)


def ltx_layout(keys: Any) -> str | None:
    """"comfyui", "original" or "diffusers" when tensor names are an LTX-Video transformer's, else None."""
    keys = set(keys)
    if any(k.endswith(("audio_patchify_proj.weight", "audio_proj_in.weight")) for k in keys):
        return None  # LTX-2 (audio-video): ltx2.files
    if _COMFY + _ORIGINAL_MARK in keys and _COMFY + "adaln_single.linear.weight" in keys:
        return "comfyui"
    if _ORIGINAL_MARK in keys and "adaln_single.linear.weight" in keys:
        return "original"
    if all(k in keys for k in _DIFFUSERS_MARKS) and any(k.endswith("attn2.to_k.weight") for k in keys):
        return "diffusers"
    return None


def is_ltx_transformer(header: Any) -> bool:
    """Whether a file header (``detect.Header``) holds an LTX-Video transformer."""
    return ltx_layout(header.shapes) is not None


def to_diffusers(state: dict[str, Any], layout: str) -> dict[str, Any]:
    """Diffusers names for an LTX-Video transformer state dict of ``layout`` (original names via diffusers)."""
    if layout == "diffusers":
        return state
    from diffusers.loaders.single_file_utils import (
        convert_ltx_transformer_checkpoint_to_diffusers,
    )

    return convert_ltx_transformer_checkpoint_to_diffusers(state)


def config_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """``LTXVideoTransformer3DModel`` config from diffusers-named tensors (sizes from the shapes)."""
    proj = state["proj_in.weight"]
    inner, in_channels = int(proj.shape[0]), int(proj.shape[1])
    head = 64 if inner <= 2048 else 128
    if inner % head:
        raise UnknownModelError(f"this LTX-Video transformer is {inner} wide, not a multiple of its head width "
                                f"{head}; the file is not an LTX-Video model")
    layers = {int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")}
    return dict(shipped_config("transformer_2b"), in_channels=in_channels,
                out_channels=int(state["proj_out.weight"].shape[0]), num_attention_heads=inner // head,
                attention_head_dim=head, cross_attention_dim=int(state["transformer_blocks.0.attn2.to_k.weight"]
                                                                 .shape[0]),
                num_layers=len(layers), caption_channels=int(state["caption_projection.linear_1.weight"].shape[1]))


def causal_positions(metadata: dict[str, str] | None) -> bool:
    """Whether a file's metadata asks for causal temporal positions (the 0.9.5+ releases' ``config`` JSON:
    ``transformer.causal_temporal_positioning``), as ComfyUI reads it; False without it (0.9.0 / 0.9.1)."""
    try:
        config = json.loads((metadata or {}).get("config") or "{}")
    except ValueError:
        return False
    transformer = config.get("transformer") if isinstance(config, dict) else None
    return bool(isinstance(transformer, dict) and transformer.get("causal_temporal_positioning", False))


def transformer_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                           dtype: Any = None, causal: bool = False) -> DiffusionModel:
    """MODEL from an LTX-Video transformer's tensors in any layout (``state`` is emptied as they are placed);
    ``causal``: the first latent frame alone at time 0 and the others at 8·t - 7 frames (0.9.5+, see sampling)."""
    import torch
    from diffusers import LTXVideoTransformer3DModel

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings
    from ..loading import quiet_libraries

    from ..fp8 import unscale_fp8

    state = unscale_fp8(state, dtype or torch.float32)  # ComfyUI's fp8_scaled files
    layout = ltx_layout(state)
    if layout is None:
        raise UnknownModelError(f"{name} is not an LTX-Video transformer (no patchify_proj / proj_in tensors)")
    if layout == "comfyui":
        for k in [k for k in state if not k.startswith(_COMFY)]:
            state.pop(k)  # the VAE or text encoder of an all-in-one file: loaded by their own loaders
    with quiet_libraries():
        state = to_diffusers(state, layout)
    config = config_from_state(state)
    log.info("%s: LTX-Video transformer (%s layout), %d layers, %d wide", name, layout, config["num_layers"],
             config["num_attention_heads"] * config["attention_head_dim"])
    compute = dtype or torch.float32
    transformer = filled_model(LTXVideoTransformer3DModel, config, state, name, compute, weight_dtype)
    arch = "ltxv-13b" if config["num_layers"] >= 48 else "ltxv-2b"
    return DiffusionModel(unet=transformer, scheduler_config={"causal_temporal_positioning": bool(causal)},
                          arch=arch, source=name, latent=LTX_LATENT,
                          family="ltxv", flow=FlowSettings("flux", DEFAULT_SHIFT, 1000.0))


def load_ltx_transformer(path: Path, header: Any, name: str, weight_dtype: str = "default",
                         dtype: Any = None) -> DiffusionModel:
    """MODEL from an LTX-Video transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    causal = causal_positions(header.metadata)
    return transformer_from_state(load_file(str(path)), name, weight_dtype, dtype, causal)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    from ..loading import quiet_libraries

    out = {}
    with quiet_libraries(), init_empty_weights():
        for name in CONFIG_NAMES:
            cls = LTXVideoTransformer3DModel if name.startswith("transformer_") else AutoencoderKLLTXVideo
            out[name] = sum(p.numel() for p in cls.from_config(shipped_config(name)).parameters())
    return out


__all__ = ["CONFIG_NAMES", "DEFAULT_SHIFT", "LTX_CONFIGS", "LTX_LATENT", "TEMPORAL", "causal_positions",
           "config_from_state",
           "is_ltx_transformer", "load_ltx_transformer", "ltx_layout", "parameter_counts", "shipped_config",
           "to_diffusers", "transformer_from_state"]
