"""All-in-one AuraFlow checkpoints (CheckpointLoaderSimple: ComfyUI_examples' ``aura_flow_0.1/0.2/0.3.safetensors``).

Such a file holds the transformer (original names) under ``model.`` (or ``model.diffusion_model.``), Pile-T5-XL under
``text_encoders.pile_t5xl.transformer.`` and SDXL's VAE (LDM names) under ``vae.``. Each part loads as its split
file would; the tokenizer comes from the file's ``spiece_model`` tensor or a ``pile_t5_tokenizer`` folder beside
the checkpoint (see ``loading.pile_t5_tokenizer``). Files without an AuraFlow transformer are left to the other
readers (None).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import Header, read_header
from ..types import Checkpoint, VAEModel
from .detect import transformer_layout
from .loading import AURA_LATENT, pile_t5_clip, transformer_from_state

TEXT = "text_encoders.pile_t5xl.transformer."
VAE = "vae."


def _part(shapes: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}


def auraflow_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """``families.CHECKPOINT_FILES`` reader: MODEL, CLIP and VAE of an all-in-one AuraFlow checkpoint, else None."""
    from safetensors.torch import load_file

    from .. import derive, single_file

    header = read_header(Path(path))
    found = transformer_layout(header.shapes)
    if found is None or not found[0]:  # a bare transformer file is UNETLoader's
        return None
    text_shapes, vae_shapes = _part(header.shapes, TEXT), _part(header.shapes, VAE)
    missing = [what for what, part in (("Pile-T5-XL text encoder", text_shapes), ("VAE", vae_shapes)) if not part]
    if missing:
        raise ValueError(f"{name} holds an AuraFlow transformer but no {' or '.join(missing)}; load it with "
                         "UNETLoader (models/diffusion_models), CLIPLoader and VAELoader instead")
    state = load_file(str(path))
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)} for p in (TEXT, VAE)}
    model = transformer_from_state(state, header.shapes, name, "default", dtype)
    clip = pile_t5_clip(parts[TEXT], text_shapes, Path(path), f"{name}: Pile-T5-XL", dtype)
    config = dict(derive.vae_config(Header(header.path, vae_shapes, header.metadata), ""),
                  scaling_factor=AURA_LATENT.scaling_factor)
    vae = single_file.vae(parts[VAE], config, name)
    vae_model = VAEModel(vae=vae, scaling_factor=AURA_LATENT.scaling_factor, shift_factor=0.0, source=name)
    return Checkpoint(model=model, clip=clip, vae=vae_model, extras={"format": "single_file", "family": "auraflow"})


__all__ = ["auraflow_checkpoint"]
