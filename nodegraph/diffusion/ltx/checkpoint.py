"""All-in-one LTX-Video files for CheckpointLoaderSimple (``ltx-video-2b-v0.9.safetensors``, ``…-v0.9.1``).

Such a file holds the transformer under ``model.diffusion_model.`` and the VAE under ``vae.`` (original names), no
text encoder: the CLIP output holds none and says to load T5-XXL with CLIPLoader type ``ltxv``, as ComfyUI's
workflows do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import Header, read_header
from ..types import Checkpoint, TextEncoder

MARK = "model.diffusion_model.patchify_proj.weight"


def is_ltx_checkpoint(header: Header) -> bool:
    """Whether a checkpoint's header holds an LTX-Video transformer under ``model.diffusion_model.``."""
    return MARK in header.shapes and "model.diffusion_model.audio_patchify_proj.weight" not in header.shapes  # LTX-2


def ltx_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, (empty) CLIP and VAE of an all-in-one LTX-Video file; None when it holds no LTX transformer."""
    from safetensors.torch import load_file

    from .files import causal_positions, transformer_from_state
    from .vae import ltx_vae_from_state

    header = read_header(Path(path))
    if not is_ltx_checkpoint(header):
        return None
    state = load_file(str(path))
    vae_state = {k: state.pop(k) for k in list(state) if k.startswith("vae.")}
    if not vae_state:
        raise ValueError(f"{name} holds an LTX-Video transformer but no VAE; load it with UNETLoader "
                         "(models/diffusion_models) and the VAE with VAELoader")
    model = transformer_from_state(state, name, "default", dtype, causal_positions(header.metadata))
    vae = ltx_vae_from_state(vae_state, name)
    if vae is None:
        raise ValueError(f"{name}: the tensors under vae. are not an LTX-Video VAE")
    clip = TextEncoder(tokenizers=(), encoders=(), arch="ltxv")
    return Checkpoint(model=model, clip=clip, vae=vae, extras={"format": "single_file",
                                                              "reasons": ["LTX-Video transformer + VAE"]})


__all__ = ["MARK", "is_ltx_checkpoint", "ltx_checkpoint"]
