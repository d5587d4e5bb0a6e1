"""Genmo Mochi 1 preview diffusion-transformer files → MODEL (``MochiTransformer3DModel``), and the shipped configs.

Layouts: ComfyUI's (Genmo's own module names, e.g. ``blocks.0.attn.qkv_x``, bare or under
``model.diffusion_model.``; ``mochi_preview_bf16``/``fp8_scaled``) and diffusers' (``transformer_blocks.0.attn1.to_q``).
The mapping is diffusers' own (``convert_mochi_transformer_checkpoint_to_diffusers``), written for any depth: fused
q/k/v split, the SwiGLU halves swapped to diffusers' (gate, proj) order, the final modulation's (shift, scale) swapped
to (scale, shift), and the last block (no text update) gets ``norm1_context.linear_1``. Sizes come from the shapes.
Sampling: ComfyUI's model sampling for Mochi is flow with shift 6 and multiplier 1 (timestep = sigma).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError
from ..flow.detect import read_config
from ..rename_rules import compile_rules, rename_by_rules
from ..types import DiffusionModel, LatentFormat

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "mochi"
#: ComfyUI's noise shift and timestep multiplier for Mochi (supported_models.GenmoMochi).
DEFAULT_SHIFT, MULTIPLIER = 6.0, 1.0
#: ComfyUI's latent → RGB factors for Mochi (on normalised latents, as its previews apply them), bias last.
_RGB = ((-0.0069, -0.0045, 0.0018), (0.0154, -0.0692, -0.0274), (0.0333, 0.0019, 0.0206), (-0.1390, 0.0628, 0.1678),
        (-0.0725, 0.0134, -0.1898), (0.0074, -0.0270, -0.0209), (-0.0176, -0.0277, -0.0221), (0.5294, 0.5204, 0.3852),
        (-0.0326, -0.0446, -0.0143), (-0.0659, 0.0153, -0.0153), (0.0185, -0.0217, 0.0014), (-0.0396, -0.0495, -0.0281),
        (-0.0940, -0.1418, -0.1453))
#: Mochi's latent space as LATENT holds it: 12 channels, 8× spatial, 6× temporal, already normalised per channel
#: (the Mochi VAE applies ComfyUI's latents_mean/latents_std, see ``mochi.vae``), so the MODEL scales by 1.
MOCHI_LATENT = LatentFormat(channels=12, downscale=8, scaling_factor=1.0, shift_factor=0.0, rgb=_RGB)
_COMFY_MARK = "blocks.0.attn.qkv_x.weight"
_DIFFUSERS_MARK = "transformer_blocks.0.attn1.add_q_proj.weight"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Mochi config (``configs/mochi/<name>.json``) without its ``_class_name``."""
    return read_config(CONFIGS, name)


def empty_latent(batch: int, frames: int, height: int, width: int) -> Any:
    """EmptyMochiLatentVideo's LATENT samples ``[batch, 12, frames, height, width]``: ComfyUI's empty (all-zero raw)
    latent as the MODEL sees it, normalised per channel (``-latents_mean / latents_std``)."""
    import torch

    cfg = shipped_config("vae")
    mean = torch.tensor(cfg["latents_mean"], dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg["latents_std"], dtype=torch.float32).view(1, -1, 1, 1, 1)
    return (-mean / std).expand(batch, -1, frames, height, width).contiguous()


def layout(shapes: Any) -> tuple[str, str] | None:
    """("comfyui" or "diffusers", prefix) when the tensor names are a Mochi transformer's, else None."""
    for prefix in _PREFIXES:
        if prefix + _COMFY_MARK in shapes and prefix + "t5_y_embedder.to_kv.weight" in shapes:
            return "comfyui", prefix
    if _DIFFUSERS_MARK in shapes and "time_embed.pooler.to_kv.weight" in shapes:
        return "diffusers", ""
    return None


def is_mochi_transformer(header: Any) -> bool:
    """Whether a file header (``detect.Header``) holds a Mochi transformer (ComfyUI's or diffusers' layout)."""
    return layout(header.shapes) is not None


_B = r"blocks\.(\d+)\."
_T = "transformer_blocks.{}."
#: ComfyUI (Genmo) name (regex; block index captured) → diffusers name; "*kind:" marks a split or a swap.
_RULES: tuple[tuple[str, str], ...] = (
    (r"x_embedder\.proj\.", "patch_embed.proj."),
    (r"t_embedder\.mlp\.0\.", "time_embed.timestep_embedder.linear_1."),
    (r"t_embedder\.mlp\.2\.", "time_embed.timestep_embedder.linear_2."),
    (r"t5_y_embedder\.to_(kv|q|out)\.", "time_embed.pooler.to_{}."),
    (r"t5_yproj\.", "time_embed.caption_proj."),
    (_B + r"mod_x\.", _T + "norm1.linear."),
    (_B + r"mod_y\.", "*mod_y:" + _T),
    (_B + r"attn\.qkv_x\.", "*qkv:" + _T + "attn1.to_{}."),
    (_B + r"attn\.qkv_y\.", "*qkv:" + _T + "attn1.add_{}_proj."),
    (_B + r"attn\.q_norm_x\.", _T + "attn1.norm_q."),
    (_B + r"attn\.k_norm_x\.", _T + "attn1.norm_k."),
    (_B + r"attn\.q_norm_y\.", _T + "attn1.norm_added_q."),
    (_B + r"attn\.k_norm_y\.", _T + "attn1.norm_added_k."),
    (_B + r"attn\.proj_x\.", _T + "attn1.to_out.0."),
    (_B + r"attn\.proj_y\.", _T + "attn1.to_add_out."),
    (_B + r"mlp_x\.w1\.", "*gate:" + _T + "ff.net.0.proj."),
    (_B + r"mlp_x\.w2\.", _T + "ff.net.2."),
    (_B + r"mlp_y\.w1\.", "*gate:" + _T + "ff_context.net.0.proj."),
    (_B + r"mlp_y\.w2\.", _T + "ff_context.net.2."),
    (r"final_layer\.mod\.", "*swap:norm_out.linear."),
    (r"final_layer\.linear\.", "proj_out."),
    (r"pos_frequencies", "pos_frequencies"),
)
_COMPILED = compile_rules(_RULES)


def _special(target: str, tensor: Any, group: str | None, tail: str, last: bool) -> list[tuple[str, Any]]:
    """The diffusers tensors of one fused/swapped ComfyUI tensor (``target`` starts with ``*kind:``)."""
    import torch

    kind, _, pattern = target[1:].partition(":")
    if kind == "qkv":
        return [(pattern.format(group, part) + tail, t) for part, t in zip("qkv", tensor.chunk(3, dim=0))]
    if kind == "mod_y":  # the last block only scales the text (no update): diffusers' linear_1
        return [(pattern.format(group) + ("norm1_context.linear_1." if last else "norm1_context.linear.") + tail,
                 tensor)]
    # "gate": (proj, gate) → (gate, proj); "swap": (shift, scale) → (scale, shift)
    first, second = tensor.chunk(2, dim=0)
    return [(pattern.format(group) + tail, torch.cat([second, first], dim=0))]


def to_diffusers(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Diffusers names for a Mochi transformer state dict in ComfyUI's (Genmo's) layout (``state`` is emptied); an
    unknown name raises UnknownModelError naming it."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    last = max(blocks) if blocks else -1
    return rename_by_rules(
        state, prefix, _COMPILED,
        lambda target, tensor, group, tail: _special(target, tensor, group, tail,
                                                     group is not None and int(group) == last),
        "is not a Mochi transformer tensor (ComfyUI/Genmo layout); the file is another model")


def config_from_state(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``MochiTransformer3DModel`` config from diffusers-named tensors (sizes from the shapes)."""
    patch = state.get("patch_embed.proj.weight")
    norm = state.get("transformer_blocks.0.attn1.norm_q.weight")
    if patch is None or norm is None or patch.dim() != 4:
        raise UnknownModelError(f"{name} lacks the Mochi patch embedding or attention norms; the file is incomplete")
    hidden, head = int(patch.shape[0]), int(norm.shape[0])
    p = int(patch.shape[2])
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}
    return dict(shipped_config("transformer"), patch_size=p, num_attention_heads=hidden // head,
                attention_head_dim=head, num_layers=len(layers), in_channels=int(patch.shape[1]),
                out_channels=int(state["proj_out.weight"].shape[0]) // (p * p),
                pooled_projection_dim=int(state["time_embed.caption_proj.weight"].shape[0]),
                text_embed_dim=int(state["time_embed.caption_proj.weight"].shape[1]),
                time_embed_dim=int(state["time_embed.timestep_embedder.linear_1.weight"].shape[1]))


def transformer_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Mochi transformer's tensors in either layout (``state`` is emptied as they are placed)."""
    import torch
    from diffusers import MochiTransformer3DModel

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings
    from ..fp8 import unscale_fp8

    found = layout(state)
    if found is None:
        raise UnknownModelError(f"{name} is not a Mochi transformer (no blocks.0.attn.qkv_x / t5_y_embedder)")
    kind, prefix = found
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    if kind != "diffusers":
        state = to_diffusers(state, prefix)
    config = config_from_state(state, name)
    log.info("%s: Mochi transformer (%s layout), %d blocks, %d wide", name, kind, config["num_layers"],
             config["num_attention_heads"] * config["attention_head_dim"])
    transformer = filled_model(MochiTransformer3DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch="mochi-preview", source=name,
                          latent=MOCHI_LATENT, family="mochi", flow=FlowSettings("discrete", DEFAULT_SHIFT, MULTIPLIER))


def load_mochi_transformer(path: Path, header: Any, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Mochi transformer file (UNETLoader; ``families.TRANSFORMER_FILES`` entry)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), name, weight_dtype, dtype)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLMochi, MochiTransformer3DModel

    from ..loading import quiet_libraries

    with quiet_libraries(), init_empty_weights():
        return {"transformer": MochiTransformer3DModel.from_config(shipped_config("transformer")).num_parameters(),
                "vae": AutoencoderKLMochi.from_config(shipped_config("vae")).num_parameters()}


__all__ = ["CONFIGS", "DEFAULT_SHIFT", "MOCHI_LATENT", "MULTIPLIER", "config_from_state", "empty_latent",
           "is_mochi_transformer", "layout", "load_mochi_transformer", "parameter_counts", "shipped_config",
           "to_diffusers", "transformer_from_state"]
