"""HunyuanVideo 1.0 diffusion-transformer files → MODEL (``HunyuanVideoTransformer3DModel``), and the shipped configs.

Layouts: ComfyUI's (its module names, e.g. ``double_blocks.0.img_attn.qkv``, bare or under
``model.diffusion_model.``), the original Tencent release (``img_attn_qkv``, ``img_mod.linear``; renamed to
ComfyUI's names first, as ComfyUI does) and diffusers' (``transformer_blocks.0.attn.to_q``). Fused projections are
split (qkv → q, k, v; a single block's ``linear1`` → q, k, v, MLP) and the final modulation's (shift, scale) halves
swapped to diffusers' (scale, shift). The config is read from the shapes; heads are ``width // 128`` as in every
HunyuanVideo release. HunyuanVideo 1.5 and HunyuanImage files are refused with the reason.
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

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "hunyuan_video"
HEAD_DIM = 128
#: ComfyUI's default noise shift for HunyuanVideo (ModelSamplingSD3 changes it).
DEFAULT_SHIFT = 7.0
_SCALE = 0.476986
#: ComfyUI's latent → RGB factors for HunyuanVideo (they apply to scaled latents; folded here onto raw ones).
_RGB = ((-0.0395, -0.0331, 0.0445), (0.0696, 0.0795, 0.0518), (0.0135, -0.0945, -0.0282), (0.0108, -0.0250, -0.0765),
        (-0.0209, 0.0032, 0.0224), (-0.0804, -0.0254, -0.0639), (-0.0991, 0.0271, -0.0669), (-0.0646, -0.0422, -0.0400),
        (-0.0696, -0.0595, -0.0894), (-0.0799, -0.0208, -0.0375), (0.1166, 0.1627, 0.0962), (0.1165, 0.0432, 0.0407),
        (-0.2315, -0.1920, -0.1355), (-0.0270, 0.0401, -0.0821), (-0.0616, -0.0997, -0.0727), (0.0249, -0.0469, -0.1703))
#: HunyuanVideo's latent space (its VAE's scaling factor, no shift): 16 channels, 8× spatial, 4× temporal.
HUNYUAN_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=_SCALE, shift_factor=0.0,
                              rgb=tuple(tuple(v * _SCALE for v in row) for row in _RGB) + ((0.0259, -0.0192, -0.0761),))
_COMFY_MARK = "txt_in.individual_token_refiner.blocks.0.norm1.weight"
_DIFFUSERS_MARK = "context_embedder.token_refiner.refiner_blocks.0.norm1.weight"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped HunyuanVideo config (``configs/hunyuan_video/<name>.json``) without its ``_class_name``."""
    return read_config(CONFIGS, name)


def layout(shapes: Any) -> tuple[str, str] | None:
    """("comfyui" or "diffusers", prefix) when the tensor names are a HunyuanVideo transformer's, else None."""
    for prefix in _PREFIXES:
        if prefix + _COMFY_MARK in shapes and prefix + "img_in.proj.weight" in shapes:
            return "comfyui", prefix
    if _DIFFUSERS_MARK in shapes and "x_embedder.proj.weight" in shapes:
        return "diffusers", ""
    return None


def is_hunyuan_video_transformer(header: Any) -> bool:
    """Whether a file header (``detect.Header``) holds a HunyuanVideo transformer (any layout, any version)."""
    return layout(header.shapes) is not None


#: Original (Tencent) name fragments → ComfyUI's, in order (what ComfyUI's HunyuanVideo model config renames).
_ORIGINAL = (("txt_in.t_embedder.mlp.0.", "txt_in.t_embedder.in_layer."),
             ("txt_in.t_embedder.mlp.2.", "txt_in.t_embedder.out_layer."),
             ("txt_in.c_embedder.linear_1.", "txt_in.c_embedder.in_layer."),
             ("txt_in.c_embedder.linear_2.", "txt_in.c_embedder.out_layer."),
             ("_mod.linear.", "_mod.lin."), ("_attn_qkv.", "_attn.qkv."), ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.2."),
             ("_attn_q_norm.weight", "_attn.norm.query_norm.scale"), ("_attn_k_norm.weight", "_attn.norm.key_norm.scale"),
             (".q_norm.weight", ".norm.query_norm.scale"), (".k_norm.weight", ".norm.key_norm.scale"),
             ("_attn_proj.", "_attn.proj."), (".modulation.linear.", ".modulation.lin."),
             ("_in.mlp.2.", "_in.out_layer."), ("_in.mlp.0.", "_in.in_layer."))

_R = "context_embedder.token_refiner.refiner_blocks.{}."
#: ComfyUI name (regex, block index captured) → diffusers name ({} = the block index; "*" marks a split/swap).
_RULES: tuple[tuple[str, str], ...] = (
    (r"img_in\.proj\.", "x_embedder.proj."),
    (r"time_in\.in_layer\.", "time_text_embed.timestep_embedder.linear_1."),
    (r"time_in\.out_layer\.", "time_text_embed.timestep_embedder.linear_2."),
    (r"vector_in\.in_layer\.", "time_text_embed.text_embedder.linear_1."),
    (r"vector_in\.out_layer\.", "time_text_embed.text_embedder.linear_2."),
    (r"guidance_in\.in_layer\.", "time_text_embed.guidance_embedder.linear_1."),
    (r"guidance_in\.out_layer\.", "time_text_embed.guidance_embedder.linear_2."),
    (r"txt_in\.input_embedder\.", "context_embedder.proj_in."),
    (r"txt_in\.t_embedder\.in_layer\.", "context_embedder.time_text_embed.timestep_embedder.linear_1."),
    (r"txt_in\.t_embedder\.out_layer\.", "context_embedder.time_text_embed.timestep_embedder.linear_2."),
    (r"txt_in\.c_embedder\.in_layer\.", "context_embedder.time_text_embed.text_embedder.linear_1."),
    (r"txt_in\.c_embedder\.out_layer\.", "context_embedder.time_text_embed.text_embedder.linear_2."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.norm1\.", _R + "norm1."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.norm2\.", _R + "norm2."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.self_attn\.qkv\.", "*qkv:" + _R + "attn.to_{}."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.self_attn\.proj\.", _R + "attn.to_out.0."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.mlp\.0\.", _R + "ff.net.0.proj."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.mlp\.2\.", _R + "ff.net.2."),
    (r"txt_in\.individual_token_refiner\.blocks\.(\d+)\.adaLN_modulation\.1\.", _R + "norm_out.linear."),
    (r"double_blocks\.(\d+)\.img_mod\.lin\.", "transformer_blocks.{}.norm1.linear."),
    (r"double_blocks\.(\d+)\.txt_mod\.lin\.", "transformer_blocks.{}.norm1_context.linear."),
    (r"double_blocks\.(\d+)\.img_attn\.qkv\.", "*qkv:transformer_blocks.{}.attn.to_{}."),
    (r"double_blocks\.(\d+)\.txt_attn\.qkv\.", "*qkv:transformer_blocks.{}.attn.add_{}_proj."),
    (r"double_blocks\.(\d+)\.img_attn\.norm\.query_norm\.scale", "transformer_blocks.{}.attn.norm_q.weight"),
    (r"double_blocks\.(\d+)\.img_attn\.norm\.key_norm\.scale", "transformer_blocks.{}.attn.norm_k.weight"),
    (r"double_blocks\.(\d+)\.txt_attn\.norm\.query_norm\.scale", "transformer_blocks.{}.attn.norm_added_q.weight"),
    (r"double_blocks\.(\d+)\.txt_attn\.norm\.key_norm\.scale", "transformer_blocks.{}.attn.norm_added_k.weight"),
    (r"double_blocks\.(\d+)\.img_attn\.proj\.", "transformer_blocks.{}.attn.to_out.0."),
    (r"double_blocks\.(\d+)\.txt_attn\.proj\.", "transformer_blocks.{}.attn.to_add_out."),
    (r"double_blocks\.(\d+)\.img_mlp\.0\.", "transformer_blocks.{}.ff.net.0.proj."),
    (r"double_blocks\.(\d+)\.img_mlp\.2\.", "transformer_blocks.{}.ff.net.2."),
    (r"double_blocks\.(\d+)\.txt_mlp\.0\.", "transformer_blocks.{}.ff_context.net.0.proj."),
    (r"double_blocks\.(\d+)\.txt_mlp\.2\.", "transformer_blocks.{}.ff_context.net.2."),
    (r"single_blocks\.(\d+)\.linear1\.", "*linear1:single_transformer_blocks.{}."),
    (r"single_blocks\.(\d+)\.linear2\.", "single_transformer_blocks.{}.proj_out."),
    (r"single_blocks\.(\d+)\.norm\.query_norm\.scale", "single_transformer_blocks.{}.attn.norm_q.weight"),
    (r"single_blocks\.(\d+)\.norm\.key_norm\.scale", "single_transformer_blocks.{}.attn.norm_k.weight"),
    (r"single_blocks\.(\d+)\.modulation\.lin\.", "single_transformer_blocks.{}.norm.linear."),
    (r"final_layer\.adaLN_modulation\.1\.", "*swap:norm_out.linear."),
    (r"final_layer\.linear\.", "proj_out."),
)
_COMPILED = compile_rules(_RULES)


def _original_names(name: str) -> str:
    """ComfyUI's name of an original (Tencent) tensor name (unchanged when it is one already)."""
    for old, new in _ORIGINAL:
        name = name.replace(old, new)
    return name


def _split(target: str, tensor: Any, index: str | None, tail: str, hidden: int) -> list[tuple[str, Any]]:
    """The diffusers tensors of one fused/swapped ComfyUI tensor (``target`` starts with ``*kind:``)."""
    import torch

    kind, _, pattern = target[1:].partition(":")
    if kind == "qkv":
        return [(pattern.format(index, part) + tail, t) for part, t in zip("qkv", tensor.chunk(3, dim=0))]
    if kind == "linear1":
        q, k, v, mlp = torch.split(tensor, [hidden, hidden, hidden, tensor.shape[0] - 3 * hidden], dim=0)
        base = pattern.format(index)
        return [(base + "attn.to_q." + tail, q), (base + "attn.to_k." + tail, k), (base + "attn.to_v." + tail, v),
                (base + "proj_mlp." + tail, mlp)]
    shift, scale = tensor.chunk(2, dim=0)  # "swap": ComfyUI's (shift, scale) → diffusers' (scale, shift)
    return [(pattern + tail, torch.cat([scale, shift], dim=0))]


def to_diffusers(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Diffusers names for a HunyuanVideo transformer state dict in ComfyUI's or the original layout (``state`` is
    emptied); an unknown name raises UnknownModelError naming it."""
    hidden = int(state[prefix + "img_in.proj.weight"].shape[0])
    return rename_by_rules(
        state, prefix, _COMPILED, lambda target, tensor, index, tail: _split(target, tensor, index, tail, hidden),
        "is not a HunyuanVideo 1.0 transformer tensor (ComfyUI/original layout); the file is another model or a "
        "newer HunyuanVideo version", _original_names)


def refuse_other_versions(state: dict[str, Any], prefix: str, name: str) -> None:
    """UnknownModelError with the reason for HunyuanVideo 1.5 and HunyuanImage files (ComfyUI's layout)."""
    newer = ("cond_type_embedding.", "byt5_in.", "vision_in.", "time_r_in.")
    if any(k.startswith(tuple(prefix + n for n in newer)) for k in state):
        raise UnknownModelError(f"{name} is a HunyuanVideo 1.5 (or HunyuanImage 2.1) transformer, which this version "
                                "does not load; use HunyuanVideo 1.0 (hunyuan_video_t2v_720p_bf16.safetensors)")
    patch = state.get(prefix + "img_in.proj.weight")
    if patch is not None and patch.dim() != 5:
        raise UnknownModelError(f"{name} is a HunyuanImage (2-D) transformer, not HunyuanVideo; it is not supported")


def config_from_state(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``HunyuanVideoTransformer3DModel`` config from diffusers-named tensors (sizes from the shapes)."""
    patch = state["x_embedder.proj.weight"]
    if patch.dim() != 5:
        raise UnknownModelError(f"{name} is a HunyuanImage (2-D) transformer, not HunyuanVideo; it is not supported")
    hidden, in_channels = int(patch.shape[0]), int(patch.shape[1])
    p_t, p = int(patch.shape[2]), int(patch.shape[3])
    if hidden % HEAD_DIM:
        raise UnknownModelError(f"{name}: the transformer is {hidden} wide, not a multiple of {HEAD_DIM} (the head "
                                "width of every HunyuanVideo release)")

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in state if (m := rx.match(k))})

    heads = hidden // HEAD_DIM
    pooled = state.get("time_text_embed.text_embedder.linear_1.weight")
    guidance = "time_text_embed.guidance_embedder.linear_1.weight" in state
    config = dict(shipped_config("transformer_t2v_720p"), in_channels=in_channels, num_attention_heads=heads,
                  attention_head_dim=HEAD_DIM, patch_size=p, patch_size_t=p_t,
                  out_channels=int(state["proj_out.weight"].shape[0]) // (p * p * p_t),
                  num_layers=count(r"transformer_blocks\.(\d+)\."),
                  num_single_layers=count(r"single_transformer_blocks\.(\d+)\."),
                  num_refiner_layers=count(r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\."),
                  mlp_ratio=int(state["transformer_blocks.0.ff.net.0.proj.weight"].shape[0]) / hidden,
                  text_embed_dim=int(state["context_embedder.proj_in.weight"].shape[1]),
                  pooled_projection_dim=int(pooled.shape[1]) if pooled is not None else 768,
                  guidance_embeds=guidance)
    if in_channels > 16 and in_channels != 32:  # the I2V release: latent, image latent and mask (33 channels)
        config["image_condition_type"] = "latent_concat"
    elif in_channels == 32:
        raise UnknownModelError(f"{name} is a SkyReels image-to-video transformer (32 input channels), which this "
                                "version does not load")
    return config


def variant(config: dict[str, Any]) -> str:
    """``hunyuan-video-t2v`` or ``hunyuan-video-i2v`` (the concat image-to-video release)."""
    return "hunyuan-video-i2v" if config.get("image_condition_type") == "latent_concat" else "hunyuan-video-t2v"


def transformer_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a HunyuanVideo transformer's tensors in any layout (``state`` is emptied as they are placed)."""
    import torch
    from diffusers import HunyuanVideoTransformer3DModel

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings
    from ..fp8 import unscale_fp8

    found = layout(state)
    if found is None:
        raise UnknownModelError(f"{name} is not a HunyuanVideo transformer (no token-refiner tensors)")
    kind, prefix = found
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    if kind != "diffusers":
        refuse_other_versions(state, prefix, name)
        state = to_diffusers(state, prefix)
    config = config_from_state(state, name)
    arch = variant(config)
    log.info("%s: HunyuanVideo transformer %s (%s layout), %d + %d blocks, %d wide", name, arch, kind,
             config["num_layers"], config["num_single_layers"], config["num_attention_heads"] * HEAD_DIM)
    transformer = filled_model(HunyuanVideoTransformer3DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=arch, source=name, latent=HUNYUAN_LATENT,
                          family="hunyuan_video", flow=FlowSettings("discrete", DEFAULT_SHIFT, 1000.0))


def load_hunyuan_video_transformer(path: Path, header: Any, name: str, weight_dtype: str = "default",
                                   dtype: Any = None) -> DiffusionModel:
    """MODEL from a HunyuanVideo transformer file (UNETLoader; ``families.TRANSFORMER_FILES`` entry)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), name, weight_dtype, dtype)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from transformers import LlamaConfig, LlamaModel

    from ..loading import quiet_libraries

    out = {}
    with quiet_libraries(), init_empty_weights():
        out["transformer_t2v_720p"] = HunyuanVideoTransformer3DModel.from_config(
            shipped_config("transformer_t2v_720p")).num_parameters()
        out["vae"] = AutoencoderKLHunyuanVideo.from_config(shipped_config("vae")).num_parameters()
        out["text_encoder_llama"] = LlamaModel(LlamaConfig(**shipped_config("text_encoder_llama"))).num_parameters()
    return out


__all__ = ["CONFIGS", "DEFAULT_SHIFT", "HUNYUAN_LATENT", "config_from_state", "is_hunyuan_video_transformer",
           "layout", "load_hunyuan_video_transformer", "parameter_counts", "refuse_other_versions", "shipped_config",
           "to_diffusers", "transformer_from_state", "variant"]
