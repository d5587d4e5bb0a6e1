"""Prompt encoding for AuraFlow (Pile-T5-XL), as ComfyUI's AuraT5 and ``AuraFlowPipeline`` do it: the prompt's
tokens and the end token, padded to at least 256 tokens, run with the attention mask, the states of the padding
positions zeroed. The CONDITIONING entry is (states [1, T, 2048], {}).

``masked_t5_states`` is that recipe for any T5 (Cosmos Predict2's old T5-XXL pads to 512 the same way).
"""

from __future__ import annotations

from typing import Any

#: Pile-T5 prompts are padded to this many tokens (ComfyUI's min_length, AuraFlowPipeline's max_sequence_length).
AURA_MIN_LENGTH = 256


def masked_t5_states(tokenizer: Any, encoder: Any, text: str, device: Any, min_length: int,
                     max_chunks: int = 8) -> Any:
    """T5 last hidden states [1, max(min_length, tokens), D] (float32, CPU) of ``text`` with its end token (and no
    start token, whatever the tokenizer's settings: a Llama-style Pile-T5 tokenizer may add one), run with the
    attention mask and the padding positions zeroed; over ``max_chunks`` × ``min_length`` tokens raises."""
    from ..flow.text import masked_t5

    ids = list(tokenizer(text, add_special_tokens=True, truncation=False).input_ids)
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if bos is not None and ids[:1] == [bos] and bos != eos:  # ComfyUI's T5 tokenizers have no start token
        ids = ids[1:]
    if eos is not None and ids[-1:] != [eos]:  # … and always end with the end token
        ids.append(eos)
    states, _ = masked_t5(tokenizer, encoder, ids, device, min_length, max(1, int(max_chunks)) * min_length)
    states[:, len(ids):] = 0.0
    return states.cpu()


def encode_auraflow(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on an AuraFlow CLIP (Pile-T5-XL)."""
    states = masked_t5_states(clip.tokenizers[0], clip.encoders[0], text, device, AURA_MIN_LENGTH, max_chunks)
    return [(states, {})]


__all__ = ["AURA_MIN_LENGTH", "encode_auraflow", "masked_t5_states"]
