"""Which HiDream part a file holds, from its tensor names and shapes (header only), and the part's config.

- Transformer: ComfyUI's files (``model.diffusion_model.`` + the original HiDream names, which diffusers kept), the
  original release and diffusers' (the same names at the root, or under ``diffusion_model.``/``transformer.``). The
  marker is ``caption_projection.0.linear.weight`` beside ``double_stream_blocks.0.block.*``.
- Llama-3.1-8B-Instruct: transformers' ``LlamaForCausalLM`` names (``model.layers.N.self_attn.q_proj.weight``,
  ``model.embed_tokens.weight``; ComfyUI's files use the same), ``lm_head`` optional.
Sizes are read from the shapes on top of the shipped configs (``configs/hidream``), so scaled-down test models load
through the same code. What shapes do not tell (head width, Llama layers per block) follows the release: heads of
128 (32 for widths that are not multiples of 128), block i reads Llama layer min(i, 31).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..flow.detect import block_count, read_config

HIDREAM_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "hidream"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "")
MARKER = "caption_projection.0.linear.weight"
LLAMA_MARKER = "model.layers.0.self_attn.q_proj.weight"
#: The last Llama layer HiDream-I1's blocks read (block i reads layer min(i, 31)).
LAST_LLAMA_LAYER = 31


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped HiDream config (``transformer``, ``llama``) as a dict."""
    return read_config(HIDREAM_CONFIGS, name)


def transformer_prefix(shapes: dict[str, Any]) -> str | None:
    """The prefix before a HiDream transformer's tensor names; None when the file holds none."""
    return next((p for p in PREFIXES if p + MARKER in shapes
                 and p + "double_stream_blocks.0.block.adaLN_modulation.1.weight" in shapes), None)


def transformer_config(shapes: dict[str, Any], p: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers config, reasons) of the HiDream transformer under prefix ``p``."""
    inner, patch_in = (int(v) for v in shapes[p + "x_embedder.proj.weight"])
    head_dim = 128 if inner % 128 == 0 else 32
    double = block_count(shapes, p + "double_stream_blocks.")
    single = block_count(shapes, p + "single_stream_blocks.")
    blocks = double + single
    config = shipped_config("transformer")
    config.update(
        in_channels=patch_in // 4, out_channels=int(shapes[p + "final_layer.linear.weight"][0]) // 4,
        num_layers=double, num_single_layers=single, attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        caption_channels=[int(shapes[p + f"caption_projection.{blocks}.linear.weight"][1]),
                          int(shapes[p + "caption_projection.0.linear.weight"][1])],
        text_emb_dim=int(shapes[p + "p_embedder.pooled_embedder.linear_1.weight"][1]),
        num_routed_experts=block_count(shapes, p + "double_stream_blocks.0.block.ff_i.experts."),
        llama_layers=[min(i, LAST_LLAMA_LAYER) for i in range(blocks)])
    if head_dim != 128:
        config["axes_dims_rope"] = [head_dim // 2, head_dim // 4, head_dim // 4]
    reasons = [f"HiDream tensor names (caption_projection, double_stream_blocks) under {p or 'the root'!r}",
               f"{double} double + {single} single blocks, {config['num_attention_heads']}×{head_dim} wide",
               f"{config['num_routed_experts']} routed experts"]
    return config, reasons


def is_llama(shapes: dict[str, Any]) -> bool:
    """Whether a text-encoder file holds a Llama language model (no attention biases, unlike Qwen2)."""
    return LLAMA_MARKER in shapes and "model.layers.0.self_attn.q_proj.bias" not in shapes and \
        "model.embed_tokens.weight" in shapes


def llama_config(shapes: dict[str, Any]) -> dict[str, Any]:
    """A ``LlamaConfig`` dict for a Llama file's shapes (heads 128 wide as Llama-3.1-8B; 16 for narrow test models)."""
    vocab, hidden = (int(v) for v in shapes["model.embed_tokens.weight"])
    q_width = int(shapes[LLAMA_MARKER][0])
    head_dim = 128 if q_width % 128 == 0 and hidden >= 1024 else 16
    config = shipped_config("llama")
    config.update(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim,
                  intermediate_size=int(shapes["model.layers.0.mlp.gate_proj.weight"][0]),
                  num_hidden_layers=block_count(shapes, "model.layers."), num_attention_heads=q_width // head_dim,
                  num_key_value_heads=int(shapes["model.layers.0.self_attn.k_proj.weight"][0]) // head_dim)
    if vocab <= int(config["bos_token_id"]):  # a scaled-down test vocabulary: no Llama-3 special ids
        config.update(bos_token_id=None, eos_token_id=None)
    return config


__all__ = ["HIDREAM_CONFIGS", "LAST_LLAMA_LAYER", "is_llama", "llama_config", "shipped_config",
           "transformer_config", "transformer_prefix"]
