"""SDXL's CLIP from two split text-encoder files (ComfyUI's DualCLIPLoader type ``sdxl``: clip_l + clip_g).

The files are read as the other split text encoders (``flow.loading.load_text_encoder``: ComfyUI's/transformers'
``text_model.*`` names, configs from the shipped ones with the sizes of the file); of two CLIP files the wider is
CLIP-G (``flow.loading.clip_kinds``). The shipped CLIP-G config equals SDXL's ``text_encoder_2`` config, so the pair
is the checkpoint's two encoders: CLIP-L with the CLIP vocabulary padded with ``<|endoftext|>`` and OpenCLIP bigG
(with its text projection) padded with ``!``, as SDXL's tokenizers are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .types import TextEncoder


def load_sdxl_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """CLIP (arch "sdxl") from a CLIP-L and a CLIP-G text-encoder file, in either order; ``dtype`` None: float32."""
    from .flow.loading import clip_kinds, load_text_encoder
    from .loading import clip_tokenizer

    if len(paths) != 2:
        raise ValueError(f"type sdxl takes two text encoder files (clip_l and clip_g); got {len(paths)}")
    kinds = clip_kinds(paths, names)
    if sorted(kinds) != ["clip_g", "clip_l"]:
        raise ValueError(f"type sdxl takes a CLIP-L and a CLIP-G file; {' and '.join(names)} are "
                         f"{' and '.join(kinds)} (pick clip_l and clip_g, e.g. from an SDXL checkpoint's encoders)")
    loaded = {}
    for path, name, kind in zip(paths, names, kinds):
        loaded[kind] = load_text_encoder(path, name, dtype, kind)[1]
    return TextEncoder(tokenizers=(clip_tokenizer(), clip_tokenizer(pad_token="!")),
                       encoders=(loaded["clip_l"], loaded["clip_g"]), arch="sdxl")


__all__ = ["load_sdxl_clip"]
