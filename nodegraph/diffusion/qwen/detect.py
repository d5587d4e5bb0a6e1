"""Which Qwen-Image part a file holds, from its tensor names and shapes (header only), and the part's config.

- Transformer: ComfyUI's files use diffusers' tensor names (``transformer_blocks.N.img_mod.1.weight``, ``img_in``,
  ``txt_in``, ``txt_norm``), at the root or under ``model.diffusion_model.``/``diffusion_model.``/``transformer.``.
- Text encoder (Qwen2.5-VL-7B): ComfyUI's/transformers 4.x names (``model.layers.*``, ``visual.*``, ``lm_head``) or
  transformers 5.x names (``model.language_model.*``, ``model.visual.*``).
The VAE (Wan 2.1's) loads through ``video_models.wan_vae`` (VAELoader), which serves images the same way.
Sizes are read from the shapes on top of the shipped configs (``configs/qwen_image``), so scaled-down test models
load through the same code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..flow.detect import block_count

QWEN_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "qwen_image"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "")
TRANSFORMER_MARKER = "transformer_blocks.0.img_mod.1.weight"
#: Text-encoder prefixes: (language model, vision tower) in each layout.
_TE_LAYOUTS = (("model.language_model.", "model.visual."), ("model.", "visual."))


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Qwen-Image config (``transformer``, ``text_encoder``, ``vae``) as a dict."""
    config = json.loads((QWEN_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
    config.pop("_class_name", None)
    return config


def transformer_prefix(shapes: dict[str, Any]) -> str | None:
    """The prefix before a Qwen-Image transformer's tensor names; None when the file holds none."""
    return next((p for p in PREFIXES if p + TRANSFORMER_MARKER in shapes and p + "txt_norm.weight" in shapes), None)


def _rope_axes(head_dim: int) -> list[int]:
    """Rotary axes for a head width: (16, 56, 56) at 128; the same proportions (even sizes) otherwise."""
    if head_dim == 128:
        return [16, 56, 56]
    first = max(2, (head_dim // 8) // 2 * 2)
    rest = (head_dim - first) // 2 // 2 * 2
    return [head_dim - 2 * rest, rest, rest]


def transformer_config(shapes: dict[str, Any], p: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers config, reasons) of the Qwen-Image transformer under prefix ``p``."""
    inner, in_ch = shapes[p + "img_in.weight"]
    head_dim = int(shapes[p + "transformer_blocks.0.attn.norm_q.weight"][0])
    patch_out = int(shapes[p + "proj_out.weight"][0])
    config = shipped_config("transformer")
    config.update(in_channels=int(in_ch), out_channels=patch_out // 4, attention_head_dim=head_dim,
                  num_attention_heads=int(inner) // head_dim, joint_attention_dim=int(shapes[p + "txt_in.weight"][1]),
                  num_layers=block_count(shapes, p + "transformer_blocks."), axes_dims_rope=_rope_axes(head_dim),
                  guidance_embeds=p + "time_text_embed.guidance_embedder.linear_1.weight" in shapes)
    reasons = [f"Qwen-Image tensor names (img_mod, txt_norm) under {p or 'the root'!r}",
               f"{config['num_layers']} blocks, {config['num_attention_heads']}×{head_dim} wide",
               f"text width {config['joint_attention_dim']}"]
    return config, reasons


def text_encoder_layout(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """(language-model prefix, vision prefix) of a Qwen2.5-VL text-encoder file; None when it is not one."""
    for lm, vis in _TE_LAYOUTS:
        if lm + "embed_tokens.weight" in shapes and lm + "layers.0.self_attn.q_proj.bias" in shapes:
            return lm, vis
    return None


def _heads(width: int, head_dim: int, fallback: int) -> tuple[int, int]:
    dim = head_dim if width % head_dim == 0 else fallback
    return width // dim, dim


def text_encoder_config(shapes: dict[str, Any], lm: str, vis: str) -> dict[str, Any]:
    """A ``Qwen2_5_VLConfig`` dict for the text encoder's shapes (head widths 128/80 as the 7B model; 32/16 when the
    widths are not multiples of those, for scaled-down test models)."""
    config = shipped_config("text_encoder")
    text = dict(config["text_config"])
    vocab, hidden = shapes[lm + "embed_tokens.weight"]
    heads, head_dim = _heads(int(shapes[lm + "layers.0.self_attn.q_proj.weight"][0]), 128, 32)
    kv_heads = int(shapes[lm + "layers.0.self_attn.k_proj.weight"][0]) // head_dim
    half = head_dim // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text.update(vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=block_count(shapes, lm + "layers."),
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                intermediate_size=int(shapes[lm + "layers.0.mlp.gate_proj.weight"][0]),
                max_window_layers=block_count(shapes, lm + "layers."),
                rope_scaling={"type": "mrope", "mrope_section": section})
    config["text_config"] = text
    if vis + "patch_embed.proj.weight" in shapes:
        vision = dict(config["vision_config"])
        width = int(shapes[vis + "patch_embed.proj.weight"][0])
        depth = block_count(shapes, vis + "blocks.")
        vision.update(hidden_size=width, depth=depth, num_heads=_heads(width, 80, 16)[0],
                      intermediate_size=int(shapes[vis + "blocks.0.mlp.gate_proj.weight"][0]),
                      out_hidden_size=int(shapes[vis + "merger.mlp.2.weight"][0]))
        if depth != 32:
            vision["fullatt_block_indexes"] = [depth - 1]
        config["vision_config"] = vision
    return config


__all__ = ["QWEN_CONFIGS", "shipped_config", "text_encoder_config", "text_encoder_layout",
           "transformer_config", "transformer_prefix"]
