"""Which AuraFlow part a file holds, from its tensor names and shapes (header only), and the part's config.

- Transformer: the original/ComfyUI names (``double_layers.N.attn.w2q``, ``single_layers``, ``cond_seq_linear``,
  ``positional_encoding``) at the root or under ``model.diffusion_model.``/``diffusion_model.``/``model.``, or
  diffusers' names (``joint_transformer_blocks``, ``single_transformer_blocks``, ``register_tokens``).
- Text encoder: Pile-T5-XL (``encoder.block.*`` with a relative-attention bias in every layer, UMT5's layout).
Sizes are read from the shapes on top of the shipped configs (``configs/auraflow``), so scaled-down test models load
through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..flow.detect import block_count, find_layout, read_config

AURA_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "auraflow"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "transformer.", "")
#: (marker, layout) pairs: a tensor each layout always has.
_MARKERS = (("double_layers.0.attn.w1q.weight", "original"), ("joint_transformer_blocks.0.attn.add_q_proj.weight",
                                                              "diffusers"))


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped AuraFlow config (``transformer``, ``text_encoder``) as a dict."""
    return read_config(AURA_CONFIGS, name)


def transformer_layout(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """(prefix, "original" | "diffusers") of an AuraFlow transformer's tensor names; None when there is none."""
    return find_layout(shapes, PREFIXES, _MARKERS, lambda prefix: prefix + "register_tokens" in shapes)


def transformer_config(shapes: dict[str, Any], prefix: str, layout: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers config, reasons) of the AuraFlow transformer under ``prefix`` in ``layout``."""
    p = prefix
    if layout == "original":
        width, cond = shapes[p + "cond_seq_linear.weight"]
        patch_in = int(shapes[p + "init_x_linear.weight"][1])
        out = int(shapes[p + "final_linear.weight"][0])
        pos = int(shapes[p + "positional_encoding"][1])
        doubles, singles = block_count(shapes, p + "double_layers."), block_count(shapes, p + "single_layers.")
        heads_key = p + "double_layers.0.attn.w1q.weight"
    else:
        width, cond = shapes[p + "context_embedder.weight"]
        patch_in = int(shapes[p + "pos_embed.proj.weight"][1])
        out = int(shapes[p + "proj_out.weight"][0])
        pos = int(shapes[p + "pos_embed.pos_embed"][1])
        doubles = block_count(shapes, p + "joint_transformer_blocks.")
        singles = block_count(shapes, p + "single_transformer_blocks.")
        heads_key = p + "joint_transformer_blocks.0.attn.add_q_proj.weight"
    config = shipped_config("transformer")
    patch = int(config["patch_size"])
    head_dim = int(config["attention_head_dim"]) if int(width) % int(config["attention_head_dim"]) == 0 \
        and int(width) >= 256 else 32
    config.update(in_channels=patch_in // (patch * patch), out_channels=out // (patch * patch),
                  num_mmdit_layers=doubles, num_single_dit_layers=singles, attention_head_dim=head_dim,
                  num_attention_heads=int(shapes[heads_key][0]) // head_dim, joint_attention_dim=int(cond),
                  caption_projection_dim=int(width), pos_embed_max_size=pos)
    reasons = [f"AuraFlow tensor names ({layout}) under {p or 'the root'!r}",
               f"{doubles} joint + {singles} single blocks, {config['num_attention_heads']}×{head_dim} wide",
               f"text width {int(cond)}, {pos} positions"]
    return config, reasons


def text_encoder_prefix(shapes: dict[str, Any]) -> str | None:
    """The prefix before a Pile-T5 (UMT5-layout) encoder's ``encoder.block.*`` names; None when it is not one."""
    mark = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
    for key in shapes:
        if key.endswith(mark):
            return key[:-len(mark)]
    return None


def text_encoder_config(shapes: dict[str, Any], p: str) -> dict[str, Any]:
    """A ``UMT5Config`` dict for a Pile-T5 encoder's shapes under prefix ``p``."""
    emb = shapes.get(p + "shared.weight") or shapes[p + "encoder.embed_tokens.weight"]
    block = p + "encoder.block.0.layer."
    buckets, heads = shapes[block + "0.SelfAttention.relative_attention_bias.weight"]
    return dict(shipped_config("text_encoder"), vocab_size=int(emb[0]), d_model=int(emb[1]), num_heads=int(heads),
                d_kv=int(shapes[block + "0.SelfAttention.q.weight"][0]) // int(heads),
                d_ff=int(shapes[block + "1.DenseReluDense.wi_0.weight"][0]),
                num_layers=block_count(shapes, p + "encoder.block."), relative_attention_num_buckets=int(buckets))


__all__ = ["AURA_CONFIGS", "shipped_config", "text_encoder_config", "text_encoder_prefix", "transformer_config",
           "transformer_layout"]
