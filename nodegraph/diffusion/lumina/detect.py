"""Which NextDiT transformer (Z-Image or Lumina 2) a file holds, from tensor names and shapes (header only).

Layouts (at the root or under ``model.diffusion_model.``/``diffusion_model.``):

- ComfyUI/original (``comfy/ldm/lumina/model.py``): ``cap_embedder.1``, ``layers.N.attention.qkv`` (fused),
  ``feed_forward.w1``. Z-Image's blocks modulate through ``adaLN_modulation.0`` (one linear from a 256-wide time
  embedding), Lumina 2's through ``adaLN_modulation.1`` (SiLU, linear).
- diffusers: Z-Image ``all_x_embedder.2-1``; Lumina 2 ``time_caption_embed.caption_embedder.1``.

Sizes (width, depth, heads, text width, feed-forward width) are read from the shapes on top of the shipped configs
(``configs/lumina``), so scaled-down test models load through the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LUMINA_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "lumina"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped config (``z_image_transformer``, ``lumina2_transformer``, ``qwen3_4b``, ``gemma2_2b``) as a dict."""
    config = json.loads((LUMINA_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
    config.pop("_class_name", None)
    return config


@dataclass
class Found:
    """A detected NextDiT transformer: ``family`` ("z_image" | "lumina2"), ``layout`` ("comfyui" | "diffusers"),
    the tensor-name ``prefix``, the diffusers ``config`` and the ``reasons`` for the log."""

    family: str
    layout: str
    prefix: str
    config: dict[str, Any]
    reasons: list[str] = field(default_factory=list)


def _count(shapes: dict[str, Any], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def rope_axes(head_dim: int, family: str) -> list[int]:
    """Rotary axes for a head width: Z-Image's (32, 48, 48) at 128, Lumina 2's (32, 32, 32) at 96; the same
    proportions (even sizes) for other widths."""
    if family == "z_image":
        if head_dim == 128:
            return [32, 48, 48]
        first = max(2, head_dim // 4 // 2 * 2)
    else:
        if head_dim == 96:
            return [32, 32, 32]
        first = max(2, head_dim // 3 // 2 * 2)
    rest = (head_dim - first) // 2 // 2 * 2
    return [head_dim - 2 * rest, rest, rest]


def _layout(shapes: dict[str, Any]) -> tuple[str, str, str] | None:
    """(family, layout, prefix) of a NextDiT transformer file, else None."""
    for p in PREFIXES:
        if p + "cap_embedder.1.weight" in shapes and p + "layers.0.attention.qkv.weight" in shapes:
            family = "z_image" if p + "layers.0.adaLN_modulation.0.weight" in shapes else "lumina2"
            return family, "comfyui", p
        if p + "all_x_embedder.2-1.weight" in shapes and p + "cap_embedder.1.weight" in shapes:
            return "z_image", "diffusers", p
        if p + "time_caption_embed.caption_embedder.1.weight" in shapes and p + "layers.0.attn.to_q.weight" in shapes:
            return "lumina2", "diffusers", p
    return None


def _heads(shapes: dict[str, Any], p: str, layout: str, width: int) -> tuple[int, int, int]:
    """(heads, kv heads, head width) of the first block."""
    if layout == "comfyui":
        head_dim = int(shapes[p + "layers.0.attention.q_norm.weight"][0])
        rows = int(shapes[p + "layers.0.attention.qkv.weight"][0]) // head_dim
        heads = width // head_dim
        return heads, (rows - heads) // 2, head_dim
    attn = "attention" if p + "layers.0.attention.to_q.weight" in shapes else "attn"
    head_dim = int(shapes[p + f"layers.0.{attn}.norm_q.weight"][0])
    return width // head_dim, int(shapes[p + f"layers.0.{attn}.to_k.weight"][0]) // head_dim, head_dim


def detect_transformer(shapes: dict[str, Any]) -> Found | None:
    """The family, layout and diffusers config of a Z-Image/Lumina 2 transformer file; None when it holds neither."""
    found = _layout(shapes)
    if found is None:
        return None
    family, layout, p = found
    comfy = layout == "comfyui"
    if family == "z_image":
        cap = shapes[p + "cap_embedder.1.weight"]
        embed = shapes[p + ("x_embedder.weight" if comfy else "all_x_embedder.2-1.weight")]
    else:
        cap = shapes[p + ("cap_embedder.1.weight" if comfy else "time_caption_embed.caption_embedder.1.weight")]
        embed = shapes[p + "x_embedder.weight"]
    width, cap_dim = int(cap[0]), int(cap[1])
    heads, kv_heads, head_dim = _heads(shapes, p, layout, width)
    refiners = _count(shapes, p + "noise_refiner.")
    config = shipped_config(f"{family}_transformer")
    if family == "z_image":
        config.update(dim=width, cap_feat_dim=cap_dim, in_channels=int(embed[1]) // 4, n_heads=heads,
                      n_kv_heads=kv_heads, n_layers=_count(shapes, p + "layers."), n_refiner_layers=refiners,
                      axes_dims=rope_axes(head_dim, family))
    else:
        ffn = int(shapes[p + ("layers.0.feed_forward.w1.weight" if comfy else
                              "layers.0.feed_forward.linear_1.weight")][0])
        config.update(hidden_size=width, cap_feat_dim=cap_dim, in_channels=int(embed[1]) // 4,
                      num_attention_heads=heads, num_kv_heads=kv_heads, num_layers=_count(shapes, p + "layers."),
                      num_refiner_layers=refiners, axes_dim_rope=rope_axes(head_dim, family),
                      **_ffn(width, ffn))
    name = "Z-Image" if family == "z_image" else "Lumina 2"
    reasons = [f"{name} tensor names ({layout}) under {p or 'the root'!r}",
               f"{_count(shapes, p + 'layers.')} blocks, {heads}×{head_dim} wide ({kv_heads} kv heads)",
               f"text width {cap_dim}"]
    return Found(family, layout, p, config, reasons)


def _ffn(width: int, hidden: int) -> dict[str, Any]:
    """``multiple_of``/``ffn_dim_multiplier`` giving diffusers' Lumina 2 feed-forward width ``hidden`` (it rounds
    ``4 * width`` times the multiplier up to a multiple): the shipped 256/None when that fits."""
    if 256 * -(-4 * width // 256) == hidden:
        return {"multiple_of": 256, "ffn_dim_multiplier": None}
    if hidden >= 4 * width:
        return {"multiple_of": hidden, "ffn_dim_multiplier": None}
    return {"multiple_of": hidden, "ffn_dim_multiplier": hidden / (4 * width)}


__all__ = ["LUMINA_CONFIGS", "Found", "detect_transformer", "rope_axes", "shipped_config"]
