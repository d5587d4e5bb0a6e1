"""All-in-one Lumina 2 / Z-Image checkpoints (CheckpointLoaderSimple), as ComfyUI's ``lumina_2.safetensors``:
the NextDiT transformer under ``model.diffusion_model.``, the text encoder under
``text_encoders.<name>.transformer.`` (Gemma 2 or Qwen3, with ``…spiece_model`` for Gemma's tokenizer when the file
carries it) and Flux's VAE (LDM names) under ``vae.``. Each part loads as its split file would; a tokenizer folder
beside the checkpoint takes precedence (see ``loading``). Files without such a transformer give None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import Header, read_header
from ..types import Checkpoint, TextEncoder, VAEModel

TRANSFORMER = "model.diffusion_model."
VAE = "vae."
TEXT_ENCODERS = "text_encoders."


def _part(header: Header, prefix: str) -> Header:
    return Header(header.path, {k[len(prefix):]: v for k, v in header.shapes.items() if k.startswith(prefix)},
                  header.metadata)


def _text_prefix(header: Header) -> str | None:
    """``text_encoders.<name>.transformer.`` of the checkpoint's text encoder, else None."""
    for key in header.shapes:
        if key.startswith(TEXT_ENCODERS) and ".transformer." in key:
            return key[: key.index(".transformer.") + len(".transformer.")]
    return None


def lumina_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, CLIP and VAE of an all-in-one Lumina 2/Z-Image checkpoint; None for other files
    (``families.CHECKPOINT_FILES``)."""
    from safetensors.torch import load_file

    from .. import derive, single_file
    from ..flow.loading import vae_overrides
    from .detect import detect_transformer
    from .loading import (
        gemma_tokenizer,
        qwen3_tokenizer,
        text_encoder_from_state,
        text_encoder_kind,
        transformer_from_state,
    )

    path = Path(path)
    header = read_header(path)
    found = detect_transformer(header.shapes)
    if found is None or found.prefix != TRANSFORMER:
        return None
    text = _text_prefix(header)
    kind = text_encoder_kind(_part(header, text).shapes) if text else None
    if kind is None or not any(k.startswith(VAE) for k in header.shapes):
        raise ValueError(f"{name} holds a {found.family} transformer but not both its text encoder and VAE; load it "
                         "with UNETLoader (models/diffusion_models), the text encoder with CLIPLoader type lumina2 "
                         "and ae.safetensors with VAELoader")
    state = load_file(str(path))
    owner = text[: -len("transformer.")]
    spiece = next((state.pop(k) for k in list(state) if k.startswith(owner) and k.endswith("spiece_model")), None)
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)} for p in (text, VAE)}
    model = transformer_from_state(state, found, name, "default", dtype)
    encoder = text_encoder_from_state(parts[text], kind[0], kind[1], _part(header, text).shapes,
                                      f"{name}: text encoder", dtype)
    tokenizer = qwen3_tokenizer(path) if kind[0] == "qwen3" else gemma_tokenizer(path, spiece)
    clip = TextEncoder(tokenizers=(tokenizer,), encoders=(encoder,),
                       arch="z_image" if kind[0] == "qwen3" else "lumina2")
    config = dict(derive.vae_config(_part(header, VAE), ""))
    config.update(vae_overrides(parts[VAE]))
    vae = single_file.vae(parts[VAE], config, name)
    vae_model = VAEModel(vae=vae, scaling_factor=float(vae.config.scaling_factor),
                         shift_factor=float(vae.config.shift_factor or 0.0), source=name)
    return Checkpoint(model=model, clip=clip, vae=vae_model,
                      extras={"format": "single_file", "reasons": list(found.reasons)})


__all__ = ["lumina_checkpoint"]
