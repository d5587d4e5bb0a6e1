"""T5-XXL for Mochi (CLIPLoader type ``mochi``): loading and prompt encoding as ComfyUI's Mochi text encoder.

The prompt gets its end token and is padded with ``<pad>`` to at least ``MIN_LENGTH`` (256) tokens (longer prompts
are kept whole, as ComfyUI keeps them; MochiPipeline cuts at 256); T5 reads them with the attention mask that hides
the padding, and the entry's ``attention_mask`` [1, T] makes the transformer ignore the padding too (ComfyUI crops
the text to its real tokens). The shipped T5 v1.1 tokenizer is used unless a ``t5_tokenizer/`` folder sits beside
the T5 file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import TextEncoder

MIN_LENGTH = 256
#: Longest prompt accepted, in tokens per allowed text chunk (``limits.max_text_chunks``).
TOKENS_PER_CHUNK = 256


def load_mochi_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type ``mochi`` (``families.CLIP_LOADERS`` entry): one T5-XXL file."""
    from ..flow.loading import load_t5xxl_clip

    return load_t5xxl_clip(paths, names, dtype, "mochi", "Mochi",
                           "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn_scaled.safetensors")


def encode_mochi(clip: TextEncoder, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """CLIPTextEncode on a Mochi CLIP (``families.TEXT_ENCODERS`` entry): T5 states [1, T, 4096] and their
    ``attention_mask`` [1, T] (T >= 256)."""
    from ..flow.text import masked_t5

    if not clip.encoders:
        raise ValueError("this CLIP holds no text encoder; load t5xxl_fp16.safetensors with CLIPLoader type mochi")
    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text, add_special_tokens=True, truncation=False).input_ids
    states, mask = masked_t5(tokenizer, encoder, ids, device, MIN_LENGTH, max(1, int(max_chunks)) * TOKENS_PER_CHUNK)
    return [(states.cpu(), {"attention_mask": mask})]


__all__ = ["MIN_LENGTH", "encode_mochi", "load_mochi_clip"]
