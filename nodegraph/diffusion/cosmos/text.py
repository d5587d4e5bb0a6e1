"""Prompt encoding for Cosmos Predict2, as ComfyUI's CosmosT5 and ``Cosmos2TextToImagePipeline`` do it: the old
T5-XXL on the prompt's tokens and the end token, padded to at least 512 tokens, run with the attention mask, the
padding positions' states zeroed. The CONDITIONING entry is (states [1, T, 1024], {})."""

from __future__ import annotations

from typing import Any

from ..auraflow.text import masked_t5_states

#: Cosmos prompts are padded to this many tokens (ComfyUI's min_length, the pipelines' max_sequence_length).
COSMOS_MIN_LENGTH = 512


def encode_cosmos(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on a Cosmos CLIP (old T5-XXL)."""
    states = masked_t5_states(clip.tokenizers[0], clip.encoders[0], text, device, COSMOS_MIN_LENGTH,
                              max(1, int(max_chunks) // 2))
    return [(states, {})]


__all__ = ["COSMOS_MIN_LENGTH", "encode_cosmos"]
