"""Which Flux.2 part a file holds, from its tensor names and shapes (header only), and the part's config.

- Transformer: ComfyUI's files keep Black Forest Labs' names (``double_blocks.N.img_attn.qkv``,
  ``double_stream_modulation_img.lin``, ``single_stream_modulation.lin``), at the root or under
  ``model.diffusion_model.``/``diffusion_model.``; diffusers' files name ``transformer_blocks.N.attn.to_q``,
  ``double_stream_modulation_img.linear``. Dev has a guidance embedding (``guidance_in``), Klein none.
- Text encoder: Mistral Small 3.x's language model (dev) or Qwen3 (Klein, ``q_norm`` in its attention), under
  ``model.``, ``language_model.model.``, ``model.language_model.`` or at the root; the vision tower is not used.
- VAE: ``bn.running_mean`` (the batch-norm statistics of the packed latents) beside an SD-style encoder/decoder,
  in the original (``encoder.down.N``) or diffusers (``encoder.down_blocks.N``) layout.
Sizes are read from the shapes on top of the shipped configs (``configs/flux2``), so scaled-down test models load
through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..flow.detect import block_count, find_layout, read_config

FLUX2_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "flux2"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "")
#: (marker tensor, layout) of a Flux.2 transformer.
_MARKERS = (("double_stream_modulation_img.lin.weight", "comfyui"),
            ("double_stream_modulation_img.linear.weight", "diffusers"))
_TE_PREFIXES = ("model.language_model.", "language_model.model.", "model.", "")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Flux.2 config (``transformer_dev``, ``transformer_klein_4b``, ``vae``, ``text_encoder_*``)."""
    return read_config(FLUX2_CONFIGS, name)


def transformer_layout(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """(prefix, "comfyui" | "diffusers") of a Flux.2 transformer's tensor names; None when the file holds none."""
    return find_layout(shapes, PREFIXES, _MARKERS)


def transformer_config(shapes: dict[str, Any], prefix: str, layout: str) -> tuple[dict[str, Any], list[str]]:
    """(diffusers config, reasons) of the Flux.2 transformer under ``prefix`` in ``layout``."""
    p = prefix
    if layout == "comfyui":
        inner, in_ch = shapes[p + "img_in.weight"]
        text = int(shapes[p + "txt_in.weight"][1])
        head_dim = int(shapes[p + "double_blocks.0.img_attn.norm.query_norm.scale"][0])
        mlp = int(shapes[p + "double_blocks.0.img_mlp.0.weight"][0]) // 2
        double, single = block_count(shapes, p + "double_blocks."), block_count(shapes, p + "single_blocks.")
        guidance = p + "guidance_in.in_layer.weight" in shapes
        time_ch = int(shapes[p + "time_in.in_layer.weight"][1])
    else:
        inner, in_ch = shapes[p + "x_embedder.weight"]
        text = int(shapes[p + "context_embedder.weight"][1])
        head_dim = int(shapes[p + "transformer_blocks.0.attn.norm_q.weight"][0])
        mlp = int(shapes[p + "transformer_blocks.0.ff.linear_in.weight"][0]) // 2
        double = block_count(shapes, p + "transformer_blocks.")
        single = block_count(shapes, p + "single_transformer_blocks.")
        guidance = p + "time_guidance_embed.guidance_embedder.linear_1.weight" in shapes
        time_ch = int(shapes[p + "time_guidance_embed.timestep_embedder.linear_1.weight"][1])
    inner = int(inner)
    config = shipped_config("transformer_dev")
    axes = [head_dim // 4] * 4 if head_dim % 8 == 0 else config["axes_dims_rope"]
    config.update(in_channels=int(in_ch), num_layers=double, num_single_layers=single, attention_head_dim=head_dim,
                  num_attention_heads=inner // head_dim, joint_attention_dim=text, mlp_ratio=mlp / inner,
                  axes_dims_rope=axes, guidance_embeds=guidance, timestep_guidance_channels=time_ch)
    variant = "dev" if guidance else "klein"
    reasons = [f"Flux.2 tensor names ({layout} layout) under {prefix or 'the root'!r}",
               f"{double} double + {single} single blocks, {inner // head_dim}×{head_dim} wide",
               f"text width {text}", "guidance embedding (dev)" if guidance else "no guidance embedding (Klein)"]
    return config, [variant, *reasons]


def text_encoder_layout(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """(prefix, "mistral" | "qwen3") of a Flux.2 text-encoder file's language model; None when it is not one."""
    for prefix in _TE_PREFIXES:
        if prefix + "embed_tokens.weight" in shapes and prefix + "layers.0.self_attn.q_proj.weight" in shapes:
            qwen3 = prefix + "layers.0.self_attn.q_norm.weight" in shapes
            return prefix, "qwen3" if qwen3 else "mistral"
    return None


def text_encoder_config(shapes: dict[str, Any], prefix: str, arch: str) -> dict[str, Any]:
    """A ``MistralConfig``/``Qwen3Config`` dict for the language model's shapes (head width 128 as released; 16
    when the widths are not multiples of 128, for scaled-down test models)."""
    p = prefix
    config = shipped_config("text_encoder_mistral3_24b" if arch == "mistral" else "text_encoder_qwen3_4b")
    config.pop("model_type", None)
    vocab, hidden = shapes[p + "embed_tokens.weight"]
    q_width = int(shapes[p + "layers.0.self_attn.q_proj.weight"][0])
    if arch == "qwen3":
        head_dim = int(shapes[p + "layers.0.self_attn.q_norm.weight"][0])
    else:
        head_dim = 128 if q_width % 128 == 0 and int(hidden) >= 1024 else 16
    config.update(vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=block_count(shapes, p + "layers."),
                  num_attention_heads=q_width // head_dim, head_dim=head_dim,
                  num_key_value_heads=int(shapes[p + "layers.0.self_attn.k_proj.weight"][0]) // head_dim,
                  intermediate_size=int(shapes[p + "layers.0.mlp.gate_proj.weight"][0]))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids beyond a smaller vocabulary: unknown
        if config.get(key) is not None and config[key] >= config["vocab_size"]:
            config[key] = None
    return config


def is_flux2_vae_keys(keys: Any) -> bool:
    """Whether tensor names are a Flux.2 VAE's (batch-norm statistics beside an encoder/decoder)."""
    keys = set(keys)
    return "bn.running_mean" in keys and any(k.startswith("decoder.") for k in keys)


__all__ = ["FLUX2_CONFIGS", "is_flux2_vae_keys", "shipped_config", "text_encoder_config", "text_encoder_layout",
           "transformer_config", "transformer_layout"]
