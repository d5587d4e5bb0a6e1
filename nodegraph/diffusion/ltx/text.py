"""T5-XXL for LTX-Video (CLIPLoader type ``ltxv``): loading and prompt encoding as ``LTXPipeline`` encodes.

The prompt gets its end token and is padded with ``<pad>`` to at least ``MIN_LENGTH`` (128) tokens (longer prompts
are kept whole, as ComfyUI's LTXV tokenizer keeps them); T5 reads them with the attention mask that hides the
padding, as ComfyUI's LTXV text encoder and ``LTXConditionPipeline`` do (``LTXPipeline`` encodes without it), and
the transformer's cross-attention ignores the padding through the entry's ``attention_mask`` [1, T].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import TextEncoder

MIN_LENGTH = 128
#: Longest prompt accepted, in tokens per allowed text chunk (``limits.max_text_chunks``).
TOKENS_PER_CHUNK = 256


def load_ltxv_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type ``ltxv``: one T5-XXL file and the shipped T5 v1.1 tokenizer."""
    from ..flow.loading import load_t5xxl_clip

    if len(paths) == 2:  # DualCLIPLoader type ltxv: LTX-2's Gemma-3 and the LTX-2 checkpoint
        from ..ltx2.text import load_ltxav_pair

        return load_ltxav_pair(paths, names, dtype)
    return load_t5xxl_clip(paths, names, dtype, "ltxv", "LTX-Video", "t5xxl_fp16.safetensors")


def encode_ltxv(clip: TextEncoder, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for an LTX-Video CLIP: T5 states [1, T, 4096] and their ``attention_mask``."""
    from ..flow.text import masked_t5

    if not clip.encoders:
        raise ValueError("this CLIP holds no text encoder (LTX-Video checkpoints ship without one); load "
                         "t5xxl_fp16.safetensors with CLIPLoader type ltxv and connect its CLIP instead")
    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text, add_special_tokens=True, truncation=False).input_ids
    states, mask = masked_t5(tokenizer, encoder, ids, device, MIN_LENGTH, max(1, int(max_chunks)) * TOKENS_PER_CHUNK)
    return [(states.cpu(), {"attention_mask": mask})]


__all__ = ["MIN_LENGTH", "encode_ltxv", "load_ltxv_clip"]
