"""All-in-one Flux.1 checkpoints (CheckpointLoaderSimple): ComfyUI's ``flux1-dev-fp8``/``flux1-schnell-fp8`` files.

Such a file holds the transformer under ``model.diffusion_model.``, CLIP-L under ``text_encoders.clip_l.transformer.``,
T5-XXL under ``text_encoders.t5xxl.transformer.`` and the VAE (LDM names) under ``vae.``. Each part loads as its
split file would; T5's tokenizer comes from a ``t5_tokenizer`` folder beside the checkpoint (see
``loading.t5_tokenizer``). Files without a Flux transformer are left to the Stable Diffusion loader (None).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..detect import Header, read_header
from ..types import Checkpoint, TextEncoder, VAEModel

TRANSFORMER = "model.diffusion_model."
CLIP_L = "text_encoders.clip_l.transformer."
T5XXL = "text_encoders.t5xxl.transformer."
VAE = "vae."


def is_flow_checkpoint(header: Header) -> bool:
    """Whether a checkpoint's header holds a Flux transformer under ``model.diffusion_model.``."""
    return TRANSFORMER + "double_blocks.0.img_attn.qkv.weight" in header.shapes


def _part(header: Header, prefix: str) -> Header:
    return Header(header.path, {k[len(prefix):]: v for k, v in header.shapes.items() if k.startswith(prefix)},
                  header.metadata)


def flow_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, CLIP and VAE of an all-in-one Flux checkpoint; None when the file holds no Flux transformer."""
    from safetensors.torch import load_file

    from .. import derive, single_file
    from ..loading import clip_tokenizer
    from .detect import detect_transformer
    from .loading import (
        t5_tokenizer,
        text_encoder_from_state,
        transformer_from_state,
        vae_overrides,
    )

    header = read_header(Path(path))
    if not is_flow_checkpoint(header):
        return None
    found = detect_transformer(_part(header, TRANSFORMER))
    found = replace(found, prefix=TRANSFORMER, layout="comfyui")
    state = load_file(str(path))
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)} for p in (CLIP_L, T5XXL, VAE)}
    missing = [what for what, p in (("CLIP-L", CLIP_L), ("T5-XXL", T5XXL), ("VAE", VAE)) if not parts[p]]
    if missing:
        raise ValueError(f"{name} holds a Flux transformer but no {', '.join(missing)}; load it with UNETLoader "
                         "(models/diffusion_models) and the text encoders with DualCLIPLoader type flux")
    model = transformer_from_state(state, found, name, "default", dtype)
    _, clip_l = text_encoder_from_state(parts[CLIP_L], _part(header, CLIP_L), f"{name}: CLIP-L", dtype)
    _, t5 = text_encoder_from_state(parts[T5XXL], _part(header, T5XXL), f"{name}: T5-XXL", dtype)
    vae_header = _part(header, VAE)
    config = dict(derive.vae_config(vae_header, ""))
    config.update(vae_overrides(parts[VAE]))
    vae = single_file.vae(parts[VAE], config, name)
    clip = TextEncoder(tokenizers=(clip_tokenizer(), t5_tokenizer(Path(path))), encoders=(clip_l, t5), arch="flux")
    vae_model = VAEModel(vae=vae, scaling_factor=float(vae.config.scaling_factor),
                         shift_factor=float(vae.config.shift_factor or 0.0), source=name)
    return Checkpoint(model=model, clip=clip, vae=vae_model,
                      extras={"format": "single_file", "reasons": list(found.reasons)})


__all__ = ["flow_checkpoint", "is_flow_checkpoint"]
