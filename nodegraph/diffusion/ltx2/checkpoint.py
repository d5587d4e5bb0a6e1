"""All-in-one LTX-2 files for CheckpointLoaderSimple (``ltx-2-19b-dev.safetensors`` and the like).

ComfyUI's layout holds the transformer (and the text connectors) under ``model.diffusion_model.``, the video VAE under
``vae.``, the audio VAE under ``audio_vae.``, the vocoder under ``vocoder.`` and the text projection under
``text_embedding_projection.`` (original names); the diffusers layout puts diffusers' component names under
``transformer.``, ``vae.``, ``audio_vae.``, ``vocoder.`` and ``connectors.``. CheckpointLoaderSimple gives the MODEL
and the video VAE; the CLIP holds no text encoder and says to use LTXAVTextEncoderLoader (Gemma-3 + this file), and
the audio VAE comes from LTXVAudioVAELoader on this file, as in ComfyUI's workflows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import Header, read_header
from ..types import Checkpoint, TextEncoder

MARKS = ("model.diffusion_model.audio_patchify_proj.weight", "transformer.audio_proj_in.weight")


def is_ltx2_checkpoint(header: Header) -> bool:
    """Whether a checkpoint's header holds an LTX-2 transformer (ComfyUI's or the diffusers-prefixed layout)."""
    return any(m in header.shapes for m in MARKS)


def ltx2_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, (empty) CLIP and video VAE of an all-in-one LTX-2 file; None when it holds no LTX-2 transformer."""
    from .files import read_tensors, transformer_from_state
    from .vae import ltx2_vae_from_state

    header = read_header(Path(path))
    if not is_ltx2_checkpoint(header):
        return None
    state = read_tensors(Path(path), ("model.diffusion_model.", "transformer.", "vae."))
    vae_state = {k[len("vae."):]: state.pop(k) for k in list(state) if k.startswith("vae.")}
    if not vae_state:
        raise ValueError(f"{name} holds an LTX-2 transformer but no video VAE; load it with UNETLoader "
                         "(models/diffusion_models) instead")
    if MARKS[1] in state:  # diffusers components under their names
        state = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
    else:
        state = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    model = transformer_from_state(state, name, "default", dtype)
    vae = ltx2_vae_from_state(vae_state, name, dtype)
    clip = TextEncoder(tokenizers=(), encoders=(), arch="ltx2")
    return Checkpoint(model=model, clip=clip, vae=vae, extras={"format": "single_file",
                                                              "reasons": ["LTX-2 transformer + video VAE"]})


__all__ = ["MARKS", "is_ltx2_checkpoint", "ltx2_checkpoint"]
