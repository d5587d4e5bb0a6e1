"""Wan 2.1 / 2.2 diffusion-transformer files → MODEL (``WanTransformer3DModel``), and the shipped configs.

Layouts: ComfyUI's (original Wan names under ``model.diffusion_model.``), the original Wan release (bare names) and
diffusers' (``scale_shift_table``, ``condition_embedder.*``). Original names are converted with diffusers' own
single-file converter. The config is read from the tensor shapes (width, depth, FFN width, input channels, image
embedder); heads are ``width // 128`` as in every released Wan. ComfyUI's "scaled fp8" files are refused.

Variants (``arch``): ``wan2.1-t2v`` (16 input channels), ``wan2.1-i2v`` (36 channels + CLIP-vision embedder),
``wan2.2-i2v`` (36 channels, no embedder), ``wan2.2-ti2v-5b`` (48 channels, the Wan 2.2 VAE's latents; ``wan22``),
``wan2.1-vace`` (``vace_blocks``: ``WanVACETransformer3DModel``, controlled by WanVaceToVideo).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError
from ..types import DiffusionModel, LatentFormat

log = logging.getLogger(__name__)

WAN_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "wan"
#: The shipped configs (``configs/wan/<name>.json``).
CONFIG_NAMES = ("transformer_wan2.1_t2v_1.3B", "transformer_wan2.1_t2v_14B", "transformer_wan2.1_i2v_14B",
                "transformer_wan2.2_t2v_a14b", "transformer_wan2.2_i2v_a14b", "transformer_wan2.2_ti2v_5B",
                "vae_wan2.1", "vae_wan2.2", "umt5_xxl")
#: Wan 2.1's latent space: 16 channels, 8 pixels per cell, 4 frames per latent frame after the first.
WAN21_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=1.0, shift_factor=0.0)
#: ComfyUI's default noise shift for Wan models (ModelSamplingSD3 changes it).
DEFAULT_SHIFT = 8.0
HEAD_DIM = 128
_ORIGINAL_MARK = "head.modulation"
_DIFFUSERS_MARKS = ("scale_shift_table", "condition_embedder.time_proj.weight")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Wan config (``configs/wan/<name>.json``) without its ``_class_name``."""
    data = json.loads((WAN_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
    data.pop("_class_name", None)
    return data


def wan_layout(shapes: dict[str, Any]) -> str | None:
    """"comfyui", "original" or "diffusers" when the tensor names are a Wan transformer's, else None."""
    if "model.diffusion_model." + _ORIGINAL_MARK in shapes:
        return "comfyui"
    if _ORIGINAL_MARK in shapes:
        return "original"
    if all(k in shapes for k in _DIFFUSERS_MARKS):
        return "diffusers"
    return None


def is_wan_transformer(header: Any) -> bool:
    """Whether a file header (``detect.Header``) holds a Wan transformer."""
    return wan_layout(header.shapes) is not None


def to_diffusers(state: dict[str, Any], layout: str) -> dict[str, Any]:
    """Diffusers names for a Wan transformer state dict of ``layout`` (the original names via diffusers)."""
    if layout == "diffusers":
        return state
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from ..loading import quiet_libraries

    with quiet_libraries():
        return convert_wan_transformer_to_diffusers(state)


def config_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """``WanTransformer3DModel`` config from diffusers-named tensors (sizes from the shapes)."""
    patch = state["patch_embedding.weight"]
    dim, in_channels = int(patch.shape[0]), int(patch.shape[1])
    p = tuple(int(s) for s in patch.shape[2:])
    if dim % HEAD_DIM:
        raise UnknownModelError(f"this Wan transformer is {dim} wide, not a multiple of {HEAD_DIM} (the head width "
                                "of every Wan release); the file is not a Wan model")
    layers = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    image = state.get("condition_embedder.image_embedder.norm1.weight")
    pos = state.get("condition_embedder.image_embedder.pos_embed")
    vace = state.get("vace_patch_embedding.weight")
    extra = {}
    if vace is not None:  # Wan VACE: control blocks beside every (layers // control blocks)-th block, as ComfyUI
        controls = len({int(k.split(".")[1]) for k in state if k.startswith("vace_blocks.")})
        extra = dict(vace_in_channels=int(vace.shape[1]),
                     vace_layers=list(range(0, len(layers), max(1, len(layers) // max(1, controls))))[:controls])
    return dict(shipped_config("transformer_wan2.1_t2v_1.3B"), **extra, patch_size=list(p), in_channels=in_channels,
                num_attention_heads=dim // HEAD_DIM, attention_head_dim=HEAD_DIM,
                out_channels=int(state["proj_out.weight"].shape[0]) // (p[0] * p[1] * p[2]),
                text_dim=int(state["condition_embedder.text_embedder.linear_1.weight"].shape[1]),
                freq_dim=int(state["condition_embedder.time_embedder.linear_1.weight"].shape[1]),
                ffn_dim=int(state["blocks.0.ffn.net.0.proj.weight"].shape[0]), num_layers=len(layers),
                cross_attn_norm="blocks.0.norm2.weight" in state,
                qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in state else None,
                image_dim=None if image is None else int(image.shape[0]),
                added_kv_proj_dim=dim if "blocks.0.attn2.add_k_proj.weight" in state else None,
                pos_embed_seq_len=None if pos is None else int(pos.shape[1]))


def variant(config: dict[str, Any]) -> str:
    """The Wan variant a config describes (see the module docstring)."""
    channels = int(config["in_channels"])
    if config.get("vace_layers"):
        return "wan2.1-vace"
    if channels == 48 or int(config["out_channels"]) == 48:
        return "wan2.2-ti2v-5b"
    if channels > 16:
        return "wan2.1-i2v" if config.get("image_dim") else "wan2.2-i2v"
    return "wan2.1-t2v"


def transformer_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Wan transformer's tensors in any layout (``state`` is emptied as the weights are placed)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from ..flow.loading import fill
    from ..flow.schedule import FlowSettings
    from ..loading import quiet_libraries

    from ..fp8 import unscale_fp8

    state = unscale_fp8(state, dtype or torch.float32)  # ComfyUI's wan2.x_*_fp8_scaled files
    layout = wan_layout({k: None for k in state})
    if layout is None:
        raise UnknownModelError(f"{name} is not a Wan transformer (no head.modulation / scale_shift_table tensor)")
    state = to_diffusers(state, layout)
    config = config_from_state(state)
    arch = variant(config)
    log.info("%s: Wan transformer %s (%s layout), %d layers, %d wide", name, arch, layout, config["num_layers"],
             config["num_attention_heads"] * HEAD_DIM)
    with quiet_libraries(), init_empty_weights():
        if "vace_layers" in config:
            from diffusers import WanVACETransformer3DModel

            transformer = WanVACETransformer3DModel.from_config(config)
        else:
            transformer = WanTransformer3DModel.from_config(config)
    compute = dtype or torch.float32
    fill(transformer, state, compute, name)
    if weight_dtype != "default":
        from ..flow.loading import _float8

        transformer.enable_layerwise_casting(storage_dtype=_float8(weight_dtype), compute_dtype=compute)
    latent = WAN21_LATENT if arch != "wan2.2-ti2v-5b" else LatentFormat(channels=48, downscale=16,
                                                                         scaling_factor=1.0)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=arch, source=name, latent=latent,
                          family="wan", flow=FlowSettings("discrete", DEFAULT_SHIFT, 1000.0))


def load_wan_transformer(path: Path, header: Any, name: str, weight_dtype: str = "default",
                         dtype: Any = None) -> DiffusionModel:
    """MODEL from a Wan transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), name, weight_dtype, dtype)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ..loading import quiet_libraries

    out = {}
    with quiet_libraries(), init_empty_weights():
        for name in CONFIG_NAMES:
            cfg = shipped_config(name)
            if name.startswith("transformer_"):
                model = WanTransformer3DModel.from_config(cfg)
            elif name.startswith("vae_"):
                model = AutoencoderKLWan.from_config(cfg)
            else:
                model = UMT5EncoderModel(UMT5Config(**cfg))
            out[name] = sum(p.numel() for p in model.parameters())
    return out


__all__ = ["CONFIG_NAMES", "DEFAULT_SHIFT", "WAN21_LATENT", "WAN_CONFIGS", "config_from_state", "is_wan_transformer",
           "load_wan_transformer", "parameter_counts", "shipped_config", "to_diffusers", "transformer_from_state",
           "variant", "wan_layout"]
