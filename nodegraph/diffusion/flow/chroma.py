"""Chroma: a Flux.1-schnell-derived transformer whose modulations come from one "distilled guidance" approximator,
conditioned on T5-XXL alone (no CLIP, no guidance embedding).

- Layouts: ComfyUI's/the release's (Flux's original names plus ``distilled_guidance_layer.*``, converted by
  ``convert.to_diffusers``) and diffusers' ``ChromaTransformer2DModel`` names; sizes from the shapes on top of
  ``configs/chroma/transformer.json`` (Chroma1-HD, 8.9B).
- Sampling: Flux's latent space and token packing; ComfyUI's model sampling for Chroma is ModelSamplingFlux with
  shift 1.15 (timestep = sigma) unless a ModelSampling node says otherwise.
- Text (CLIPLoader type ``chroma``): the prompt's T5 tokens with their end token and no padding, as ComfyUI's
  Chroma/PixArt tokenizer does; the CONDITIONING entry is (T5 states [1, T, 4096], {}).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .detect import block_count
from .latents import image_ids, pack, pad_even, text_ids, unpack
from .schedule import FlowSettings

CHROMA_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "chroma"
CHROMA_FLOW = FlowSettings("flux", 1.15)
MARKER = "distilled_guidance_layer.in_proj.weight"


def chroma_config() -> dict[str, Any]:
    """The shipped Chroma transformer config."""
    return json.loads((CHROMA_CONFIGS / "transformer.json").read_text(encoding="utf-8"))


def config_from_shapes(s: dict[str, Any], p: str, original: bool) -> tuple[dict[str, Any], list[str]]:
    """(ChromaTransformer2DModel config, reasons) from the shapes of a Chroma transformer under prefix ``p``."""
    from .detect import _rope_axes

    if original:
        hidden, in_ch = s[p + "img_in.weight"]
        head_dim = s[p + "double_blocks.0.img_attn.norm.query_norm.scale"][0]
        joint, out_ch = s[p + "txt_in.weight"][1], s[p + "final_layer.linear.weight"][0]
        layers, singles = block_count(s, p + "double_blocks."), block_count(s, p + "single_blocks.")
    else:
        hidden, in_ch = s[p + "x_embedder.weight"]
        head_dim = s[p + "transformer_blocks.0.attn.norm_q.weight"][0]
        joint, out_ch = s[p + "context_embedder.weight"][1], s[p + "proj_out.weight"][0]
        layers, singles = block_count(s, p + "transformer_blocks."), block_count(s, p + "single_transformer_blocks.")
    approx_hidden, approx_in = s[p + MARKER]
    config = chroma_config()
    config.update(in_channels=int(in_ch), out_channels=int(out_ch), attention_head_dim=int(head_dim),
                  num_attention_heads=int(hidden) // int(head_dim), joint_attention_dim=int(joint),
                  num_layers=layers, num_single_layers=singles, approximator_num_channels=int(approx_in),
                  approximator_hidden_dim=int(approx_hidden),
                  approximator_layers=block_count(s, p + "distilled_guidance_layer.layers."))
    if int(head_dim) != 128:
        config["axes_dims_rope"] = _rope_axes(int(head_dim))
    reasons = [f"{'original' if original else 'diffusers'} Chroma tensor names (Flux blocks + distilled guidance "
               f"approximator) under {p or 'the root'!r}",
               f"{layers} double + {singles} single blocks, {config['num_attention_heads']}×{head_dim} wide"]
    return config, reasons


def build_transformer(config: dict[str, Any]) -> Any:
    """A ChromaTransformer2DModel on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import ChromaTransformer2DModel

    from ..loading import quiet_libraries

    with quiet_libraries(), init_empty_weights():
        return ChromaTransformer2DModel.from_config(config)


def velocity(transformer: Any, x: Any, sigma: float, emb: Any, dtype: Any) -> Any:
    """The transformer's velocity for latent ``x`` [B, 16, h, w] (scaled) at noise level ``sigma`` (float32)."""
    import torch

    b, c, h, w = x.shape
    tokens = pack(pad_even(x)).to(dtype)
    t = torch.full((b,), float(sigma), device=x.device, dtype=dtype)
    out = transformer(hidden_states=tokens, timestep=t, encoder_hidden_states=emb,
                      img_ids=image_ids(h, w, device=x.device, dtype=dtype),
                      txt_ids=text_ids(emb.shape[1], x.device, dtype), return_dict=False)[0]
    return unpack(out.float(), c, h, w)


def chroma_clip(loaded: dict[str, tuple[Any, Path]]) -> Any:
    """CLIP for CLIPLoader type chroma: one T5-XXL file and its tokenizer."""
    from ..types import TextEncoder
    from .loading import t5_tokenizer

    if set(loaded) != {"t5xxl"}:
        raise ValueError(f"type chroma takes one T5-XXL text encoder file; got {', '.join(sorted(loaded))}")
    model, path = loaded["t5xxl"]
    return TextEncoder(tokenizers=(t5_tokenizer(path),), encoders=(model,), arch="chroma")


def encode_chroma(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for a Chroma CLIP: T5's states of the prompt and its end token, unpadded."""
    import torch

    from .text import t5_states

    (tokenizer,), (encoder,) = clip.tokenizers, clip.encoders
    with torch.no_grad():  # ComfyUI's Chroma tokenizer: min_length 1 (no padding)
        states = t5_states(tokenizer, encoder, text, device, max_chunks, getattr(clip, "options", ()), 1)
    return [(states, {})]


__all__ = ["CHROMA_CONFIGS", "CHROMA_FLOW", "MARKER", "build_transformer", "chroma_clip", "chroma_config",
           "config_from_shapes", "encode_chroma", "velocity"]
