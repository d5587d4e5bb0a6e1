"""All-in-one Flux.1 and SD3/SD3.5 checkpoints (CheckpointLoaderSimple): ComfyUI's ``flux1-dev-fp8`` files and
Stability's ``sd3.5_large.safetensors``-style files (see ``sd3_checkpoint``).

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


CLIP_G = "text_encoders.clip_g.transformer."
SD3_MARKER = TRANSFORMER + "joint_blocks.0.x_block.attn.qkv.weight"


def is_flow_checkpoint(header: Header) -> bool:
    """Whether a checkpoint's header holds a Flux or SD3 transformer under ``model.diffusion_model.``."""
    return TRANSFORMER + "double_blocks.0.img_attn.qkv.weight" in header.shapes or SD3_MARKER in header.shapes


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
    if SD3_MARKER in header.shapes:
        return sd3_checkpoint(path, header, name, dtype)
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


def sd3_checkpoint(path: Path, header: Header, name: str, dtype: Any = None) -> Checkpoint:
    """MODEL, CLIP and VAE of an all-in-one SD3/SD3.5 checkpoint (Stability's ``sd3.5_large.safetensors``): the
    transformer, any of CLIP-L/CLIP-G/T5-XXL under ``text_encoders.*.transformer.``, the VAE under
    ``first_stage_model.`` (or ``vae.``). Without text encoders (``sd3_medium.safetensors``) its CLIP encodes
    nothing and says to use TripleCLIPLoader."""
    from safetensors.torch import load_file

    from .. import derive, single_file
    from .detect import detect_transformer
    from .loading import text_encoder_from_state, transformer_from_state, vae_overrides
    from .sd3 import SD3_LATENT
    from .sd3_text import sd3_clip

    found = replace(detect_transformer(_part(header, TRANSFORMER)), prefix=TRANSFORMER, layout="comfyui")
    vae_prefix = next((p for p in ("first_stage_model.", VAE) if any(k.startswith(p) for k in header.shapes)), None)
    encoders = {"clip_l": CLIP_L, "clip_g": CLIP_G, "t5xxl": T5XXL}
    present = {k: p for k, p in encoders.items() if any(s.startswith(p) for s in header.shapes)}
    if vae_prefix is None:
        raise ValueError(f"{name} holds an SD3 transformer but no VAE; load it with UNETLoader "
                         "(models/diffusion_models), the text encoders with TripleCLIPLoader and the VAE with "
                         "VAELoader")
    state = load_file(str(path))
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)}
             for p in (*present.values(), vae_prefix)}
    model = transformer_from_state(state, found, name, "default", dtype)
    loaded = {}
    for kind, prefix in present.items():
        _, enc = text_encoder_from_state(parts[prefix], _part(header, prefix), f"{name}: {kind}", dtype, kind)
        loaded[kind] = (enc, Path(path))
    config = dict(derive.vae_config(_part(header, vae_prefix), ""))
    config.update(vae_overrides(parts[vae_prefix]), scaling_factor=SD3_LATENT.scaling_factor,
                  shift_factor=SD3_LATENT.shift_factor)
    vae = single_file.vae(parts[vae_prefix], config, name)
    vae_model = VAEModel(vae=vae, scaling_factor=SD3_LATENT.scaling_factor, shift_factor=SD3_LATENT.shift_factor,
                         source=name)
    clip = sd3_clip(loaded, [name]) if loaded else TextEncoder((None,) * 3, (None,) * 3, arch="sd3")
    return Checkpoint(model=model, clip=clip, vae=vae_model,
                      extras={"format": "single_file", "reasons": list(found.reasons)})


__all__ = ["flow_checkpoint", "is_flow_checkpoint", "sd3_checkpoint"]
