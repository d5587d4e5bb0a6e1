"""Mochi's all-in-one checkpoint (ComfyUI's ``mochi_preview_fp8_scaled.safetensors``): the transformer under
``model.diffusion_model.``, T5-XXL under ``text_encoders.t5xxl.transformer.`` and the VAE under ``vae.`` (Genmo's
names), read by CheckpointLoaderSimple (``families.CHECKPOINT_FILES`` entry). fp8_scaled tensors are dequantised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import read_header
from ..types import Checkpoint, TextEncoder

MARK = "model.diffusion_model.blocks.0.attn.qkv_x.weight"
T5XXL = "text_encoders.t5xxl.transformer."
VAE = "vae."


def mochi_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, CLIP (T5-XXL) and VAE of an all-in-one Mochi file; None when it holds no Mochi transformer."""
    from safetensors.torch import load_file

    from ..flow.checkpoint import _part
    from ..flow.loading import t5_tokenizer, text_encoder_from_state
    from .files import transformer_from_state
    from .vae import mochi_vae_from_state

    header = read_header(Path(path))
    if MARK not in header.shapes:
        return None
    state = load_file(str(path))
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)} for p in (T5XXL, VAE)}
    missing = [what for what, p in (("T5-XXL", T5XXL), ("VAE", VAE)) if not parts[p]]
    if missing:
        raise ValueError(f"{name} holds a Mochi transformer but no {', '.join(missing)}; load it with UNETLoader "
                         "(models/diffusion_models), the text encoder with CLIPLoader type mochi and the VAE with "
                         "VAELoader")
    model = transformer_from_state(state, name, "default", dtype)
    _, t5 = text_encoder_from_state(parts[T5XXL], _part(header, T5XXL), f"{name}: T5-XXL", dtype)
    vae = mochi_vae_from_state(parts[VAE], f"{name}: VAE")
    if vae is None:
        raise ValueError(f"{name}: the tensors under vae. are not a Mochi VAE")
    clip = TextEncoder(tokenizers=(t5_tokenizer(Path(path)),), encoders=(t5,), arch="mochi")
    return Checkpoint(model=model, clip=clip, vae=vae, extras={"format": "single_file",
                                                              "reasons": ["Mochi transformer + T5-XXL + VAE"]})


__all__ = ["MARK", "mochi_checkpoint"]
