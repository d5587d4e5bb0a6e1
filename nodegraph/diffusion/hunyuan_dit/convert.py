"""HunyuanDiT tensor names: the original release's (also ComfyUI's, under ``model.diffusion_model.``) <-> diffusers'.

The original fuses self-attention q/k/v (``attn1.Wqkv``) and cross-attention k/v (``attn2.kv_proj``), names its
pre-cross-attention norm ``norm3`` and its pre-MLP norm ``norm2`` (diffusers swaps them), and orders the final
modulation (shift, scale) where diffusers' ``AdaLayerNormContinuous`` reads (scale, shift).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Original prefix -> diffusers prefix for the non-block modules.
_TOP = (
    ("x_embedder.proj.", "pos_embed.proj."),
    ("t_embedder.mlp.0.", "time_extra_emb.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_extra_emb.timestep_embedder.linear_2."),
    ("pooler.", "time_extra_emb.pooler."),
    ("extra_embedder.0.", "time_extra_emb.extra_embedder.linear_1."),
    ("extra_embedder.2.", "time_extra_emb.extra_embedder.linear_2."),
    ("style_embedder.", "time_extra_emb.style_embedder."),
    ("mlp_t5.0.", "text_embedder.linear_1."),
    ("mlp_t5.2.", "text_embedder.linear_2."),
    ("final_layer.linear.", "proj_out."),
    ("text_embedding_padding", "text_embedding_padding"),
)
#: Original -> diffusers names inside a block (the fused projections are split separately).
_BLOCK = (
    ("norm1.", "norm1.norm."),
    ("default_modulation.1.", "norm1.linear."),
    ("attn1.q_norm.", "attn1.norm_q."), ("attn1.k_norm.", "attn1.norm_k."), ("attn1.out_proj.", "attn1.to_out.0."),
    ("attn2.q_proj.", "attn2.to_q."),
    ("attn2.q_norm.", "attn2.norm_q."), ("attn2.k_norm.", "attn2.norm_k."), ("attn2.out_proj.", "attn2.to_out.0."),
    ("norm2.", "norm3."), ("norm3.", "norm2."),
    ("mlp.fc1.", "ff.net.0.proj."), ("mlp.fc2.", "ff.net.2."),
    ("skip_norm.", "skip_norm."), ("skip_linear.", "skip_linear."),
)
_FUSED = {"attn1.Wqkv.": ("attn1.to_q.", "attn1.to_k.", "attn1.to_v."), "attn2.kv_proj.": ("attn2.to_k.", "attn2.to_v.")}
_FINAL_MOD = "final_layer.adaLN_modulation.1."
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _swap_halves(t: Any) -> Any:
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def is_original(keys: Any) -> bool:
    """Whether tensor names (prefix removed) are the original/ComfyUI HunyuanDiT's."""
    return "mlp_t5.0.weight" in keys and "x_embedder.proj.weight" in keys


def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """diffusers ``HunyuanDiT2DModel`` names for an original-layout state (``state`` is emptied)."""
    import torch

    out: dict[str, Any] = {}
    for key in list(state):
        t = state.pop(key)
        m = _BLOCK_RE.match(key)
        if m is None:
            if key.startswith(_FINAL_MOD):
                out["norm_out.linear." + key[len(_FINAL_MOD):]] = _swap_halves(t)
                continue
            new = next((d + key[len(o):] for o, d in _TOP if key.startswith(o)), None)
            if new is None:
                raise KeyError(f"unknown HunyuanDiT tensor {key!r}")
            out[new] = t
            continue
        head, rest = f"blocks.{m.group(1)}.", m.group(2)
        fused = next((f for f in _FUSED if rest.startswith(f)), None)
        if fused is not None:
            for part, name in zip(torch.chunk(t, len(_FUSED[fused]), dim=0), _FUSED[fused]):
                out[head + name + rest[len(fused):]] = part.contiguous()
            continue
        new = next((d + rest[len(o):] for o, d in _BLOCK if rest.startswith(o)), None)
        if new is None:
            raise KeyError(f"unknown HunyuanDiT tensor {key!r}")
        out[head + new] = t
    return out


def to_original(state: Mapping[str, Any]) -> dict[str, Any]:
    """Original/ComfyUI HunyuanDiT names for a diffusers state (the inverse of ``to_diffusers``)."""
    import torch

    out: dict[str, Any] = {}
    for key, t in state.items():
        m = _BLOCK_RE.match(key)
        if m is None:
            if key.startswith("norm_out.linear."):
                out[_FINAL_MOD + key[len("norm_out.linear."):]] = _swap_halves(t)
                continue
            new = next((o + key[len(d):] for o, d in _TOP if key.startswith(d)), None)
            if new is None:
                raise KeyError(f"unknown diffusers HunyuanDiT tensor {key!r}")
            out[new] = t
            continue
        head, rest = f"blocks.{m.group(1)}.", m.group(2)
        done = False
        for fused, parts in _FUSED.items():
            if rest.startswith(parts[0]):
                suffix = rest[len(parts[0]):]
                out[head + fused + suffix] = torch.cat([state[head + p + suffix] for p in parts], dim=0)
                done = True
            elif any(rest.startswith(p) for p in parts):
                done = True
        if done:
            continue
        new = next((o + rest[len(d):] for o, d in _BLOCK if rest.startswith(d)), None)
        if new is None:
            raise KeyError(f"unknown diffusers HunyuanDiT tensor {key!r}")
        out[head + new] = t
    return out


def transformer_config(shapes: Mapping[str, Any]) -> dict[str, Any]:
    """``HunyuanDiT2DModel`` config from the shapes of an original-layout state (prefix removed)."""
    hidden, in_channels, patch = (int(v) for v in shapes["x_embedder.proj.weight"][:3])
    depth = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    head_dim = int(shapes["blocks.0.attn1.q_norm.weight"][0])
    text_len_t5 = int(shapes["pooler.positional_embedding"][0]) - 1
    out_rows = int(shapes["final_layer.linear.weight"][0])
    return {
        "_class_name": "HunyuanDiT2DModel",
        "num_attention_heads": hidden // head_dim, "attention_head_dim": head_dim, "in_channels": in_channels,
        "patch_size": patch, "activation_fn": "gelu-approximate", "sample_size": 128, "hidden_size": hidden,
        "num_layers": depth,
        # diffusers sizes the MLP as int(hidden * ratio): a hair above fc1/hidden gives fc1's rows exactly
        "mlp_ratio": (int(shapes["blocks.0.mlp.fc1.weight"][0]) + 0.01) / hidden,
        "learn_sigma": out_rows == patch * patch * in_channels * 2,
        "cross_attention_dim": int(shapes["blocks.0.attn2.kv_proj.weight"][1]), "norm_type": "layer_norm",
        "cross_attention_dim_t5": int(shapes["mlp_t5.0.weight"][1]),
        "pooled_projection_dim": int(shapes["pooler.c_proj.weight"][0]),
        "text_len": int(shapes["text_embedding_padding"][0]) - text_len_t5, "text_len_t5": text_len_t5,
        "use_style_cond_and_image_meta_size": "style_embedder.weight" in shapes,
    }


__all__ = ["is_original", "to_diffusers", "to_original", "transformer_config"]
