"""Which Cosmos Predict2 transformer a file holds, from its tensor names and shapes (header only), and its config.

Layouts: NVIDIA's/ComfyUI's names (``blocks.N.self_attn.q_proj``, ``x_embedder.proj.1``, ``mlp.layer1``) under
``net.``/``model.diffusion_model.``/``diffusion_model.`` or at the root, and diffusers' names
(``transformer_blocks.N.attn1.to_q``, ``patch_embed.proj``). The variant follows ComfyUI's model_detection: 16
input channels is text-to-image (rope scale 1, 4, 4), 17 (the condition mask) is video2world (2B: 1, 3, 3; 14B:
0.833, 2, 2); 2048 wide is the 2B (28 blocks), 5120 the 14B (36 blocks). Sizes are read from the shapes on top of
the shipped configs (``configs/cosmos``), so scaled-down test models load through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..flow.detect import block_count, find_layout, read_config

COSMOS_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "cosmos"
PREFIXES = ("net.", "model.diffusion_model.", "diffusion_model.", "model.", "transformer.", "")
#: (marker, layout) pairs: a tensor each layout always has.
_MARKERS = (("blocks.0.mlp.layer1.weight", "original"), ("transformer_blocks.0.norm1.linear_1.weight", "diffusers"))


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Cosmos config (``transformer_t2i_2B``, …, ``t5_old_xxl``) as a dict."""
    return read_config(COSMOS_CONFIGS, name)


def transformer_layout(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """(prefix, "original" | "diffusers") of a Cosmos Predict2 transformer's names; None when there is none."""
    return find_layout(shapes, PREFIXES, _MARKERS, lambda prefix: prefix + "x_embedder.proj.1.weight" in shapes
                       or prefix + "patch_embed.proj.weight" in shapes)


def transformer_config(shapes: dict[str, Any], prefix: str, layout: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers config, reasons) of the Cosmos Predict2 transformer under ``prefix`` in ``layout``."""
    p = prefix
    if layout == "original":
        width, patch_in = shapes[p + "x_embedder.proj.1.weight"]
        blocks, text = p + "blocks.", int(shapes[p + "blocks.0.cross_attn.k_proj.weight"][1])
        head_dim = int(shapes[p + "blocks.0.self_attn.q_norm.weight"][0])
        lora = int(shapes[p + "blocks.0.adaln_modulation_self_attn.1.weight"][0])
        extra = any(k.startswith(p + "extra_pos_embedder.") for k in shapes)
        ff = int(shapes[p + "blocks.0.mlp.layer1.weight"][0])
    else:
        width, patch_in = shapes[p + "patch_embed.proj.weight"]
        blocks, text = p + "transformer_blocks.", int(shapes[p + "transformer_blocks.0.attn2.to_k.weight"][1])
        head_dim = int(shapes[p + "transformer_blocks.0.attn1.norm_q.weight"][0])
        lora = int(shapes[p + "transformer_blocks.0.norm1.linear_1.weight"][0])
        extra = any(k.startswith(p + "learnable_pos_embed.") for k in shapes)
        ff = int(shapes[p + "transformer_blocks.0.ff.net.0.proj.weight"][0])
    in_channels = int(patch_in) // 4 - 1  # 1×2×2 patches of the latent and the padding mask
    size = "14B" if int(width) == 5120 else "2B"
    config = shipped_config(f"transformer_{'v2w' if in_channels == 17 else 't2i'}_{size}")
    config.update(in_channels=in_channels, attention_head_dim=head_dim, num_attention_heads=int(width) // head_dim,
                  num_layers=block_count(shapes, blocks), text_embed_dim=text, mlp_ratio=ff / int(width),
                  adaln_lora_dim=lora, extra_pos_embed_type="learnable" if extra else None)
    kind = "video2world" if in_channels == 17 else "text-to-image"
    reasons = [f"Cosmos Predict2 tensor names ({layout}) under {p or 'the root'!r}",
               f"{kind}: {in_channels} input channels",
               f"{config['num_layers']} blocks, {config['num_attention_heads']}×{head_dim} wide ({size})",
               f"text width {text}"]
    return config, reasons


__all__ = ["COSMOS_CONFIGS", "shipped_config", "transformer_config", "transformer_layout"]
