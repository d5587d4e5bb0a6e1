"""Prompt encoding for Flux: CLIP-L's pooled output and T5-XXL's hidden states, as ComfyUI and FluxPipeline do.

CLIP-L gets the prompt in its 77-token window (pooled output of the first window); T5 gets the whole prompt with its
end token, padded with ``<pad>`` to at least ``T5_MIN_LENGTH`` (256) tokens and no attention mask (T5TokenizerOptions
changes the padding: ``t5_padded``) — what ComfyUI's
Flux tokenizer does, and what ``FluxPipeline(max_sequence_length=256)`` does for prompts up to that length.
The CONDITIONING entry is (T5 states [1, T, 4096], {"pooled_output": CLIP-L pooled [1, 768]}).
Prompt weights (``(word:1.2)``) apply to T5 as ComfyUI applies them: the weighted pieces are tokenized apart, the
"empty" prompt (end token, padding) is encoded too, and a weighted token's state becomes (z - z_empty)·w + z_empty;
a prompt without weights is tokenized whole, as the pipelines do.
"""

from __future__ import annotations

from typing import Any

T5_MIN_LENGTH = 256
#: Longest T5 prompt accepted, in tokens per allowed text chunk (``limits.max_text_chunks``).
T5_TOKENS_PER_CHUNK = 256


def _clip_pooled(tokenizer: Any, encoder: Any, text: str, device: Any) -> Any:
    ids = tokenizer(text, padding="max_length", max_length=int(tokenizer.model_max_length), truncation=True,
                    return_tensors="pt").input_ids
    return encoder(ids.to(device), output_hidden_states=False).pooler_output.float().cpu()


def t5_padded(ids: list[int], pad: int, options: Any, min_length: int) -> list[int]:
    """T5 token ids (with their end token) padded as ComfyUI's tokenizer: ``t5xxl_min_padding`` pad tokens, then
    up to ``t5xxl_min_length`` tokens (the family's ``min_length`` unless T5TokenizerOptions set it; 0: none)."""
    opts = dict(options or ())
    ids = list(ids) + [pad] * int(opts.get("t5xxl_min_padding") or 0)
    length = int(opts.get("t5xxl_min_length", min_length) or 0)
    return ids + [pad] * max(0, length - len(ids))


def masked_t5(tokenizer: Any, encoder: Any, ids: list[int], device: Any, min_length: int, limit: int,
              what: str = "T5") -> tuple[Any, Any]:
    """(last hidden states [1, T, D] float32 on ``device``, attention mask [1, T] long on the CPU) of token ``ids``
    padded to T = max(``min_length``, tokens) and run with the mask; over ``limit`` tokens raises ValueError."""
    import torch

    if len(ids) > limit:
        raise ValueError(f"the prompt is {len(ids):,} {what} tokens long, more than {limit:,}; shorten it, or raise "
                         "EngineConfig.limits.max_text_chunks")
    length = max(min_length, len(ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens = torch.tensor([ids + [pad] * (length - len(ids))], dtype=torch.long, device=device)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :len(ids)] = 1
    with torch.no_grad():
        states = encoder(tokens, attention_mask=mask.to(device)).last_hidden_state.float()
    return states, mask


def t5_states(tokenizer: Any, encoder: Any, text: str, device: Any, max_chunks: int, options: Any = (),
              min_length: int = T5_MIN_LENGTH) -> Any:
    """T5's last hidden states [1, T, D] (float32, CPU) of ``text`` with its end token, padded as ``t5_padded`` says
    (``min_length``: the family's default length); a prompt over ``max_chunks`` windows raises ValueError."""
    import torch

    from ..prompt_syntax import parse

    pieces = parse(text)
    weighted = any(w != 1.0 for _, w in pieces)
    if weighted:  # each piece on its own, then the end token (ComfyUI's tokenize_with_weights)
        ids, weights = [], []
        for piece, w in pieces:
            piece_ids = tokenizer(piece, add_special_tokens=False, truncation=False).input_ids
            ids += piece_ids
            weights += [w] * len(piece_ids)
        ids.append(tokenizer.eos_token_id)
    else:
        ids = tokenizer(text, add_special_tokens=True, truncation=False).input_ids
    limit = max(1, int(max_chunks)) * T5_TOKENS_PER_CHUNK
    if len(ids) > limit:
        raise ValueError(f"the T5 prompt is {len(ids):,} tokens long, more than {limit:,}; shorten it, or raise "
                         "EngineConfig.limits.max_text_chunks")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = t5_padded(ids, pad, options, min_length)
    states = encoder(torch.tensor([ids], dtype=torch.long, device=device)).last_hidden_state.float().cpu()
    if not weighted:
        return states
    empty = [tokenizer.eos_token_id] + [pad] * (len(ids) - 1)
    z_empty = encoder(torch.tensor([empty], dtype=torch.long, device=device)).last_hidden_state.float().cpu()
    w = torch.tensor(weights + [1.0] * (len(ids) - len(weights))).view(1, -1, 1)
    return torch.where(w != 1.0, (states - z_empty) * w + z_empty, states)


def encode_flux(clip: Any, clip_l: str, t5xxl: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for a Flux CLIP (CLIP-L + T5): ``clip_l`` feeds CLIP-L, ``t5xxl`` feeds T5."""
    import torch

    if len(clip.encoders) != 2:
        raise ValueError("this CLIP is not a Flux text encoder pair (CLIP-L + T5-XXL); load it with DualCLIPLoader "
                         "type flux")
    (clip_tok, t5_tok), (clip_enc, t5_enc) = clip.tokenizers, clip.encoders
    with torch.no_grad():
        pooled = _clip_pooled(clip_tok, clip_enc, clip_l, device)
        states = t5_states(t5_tok, t5_enc, t5xxl, device, max_chunks, getattr(clip, "options", ()))
    return [(states, {"pooled_output": pooled})]


def encode_flow(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """CLIPTextEncode for a flow family's CLIP (``clip.arch`` "flux", "sd3" or "chroma"): the text to every encoder."""
    if clip.arch == "sd3":
        from .sd3_text import encode_sd3

        return encode_sd3(clip, text, text, text, device, max_chunks)
    if clip.arch == "chroma":
        from .chroma import encode_chroma

        return encode_chroma(clip, text, device, max_chunks)
    return encode_flux(clip, text, text, device, max_chunks)


__all__ = ["T5_MIN_LENGTH", "encode_flow", "encode_flux", "masked_t5", "t5_padded", "t5_states"]
