"""Prompt encoding for CLIPTextEncode: CLIP tokenizers + encoders → CONDITIONING, as diffusers' pipelines encode.

- SD1/SD2 (one encoder): the hidden states of layer ``stop_at_layer`` (-1 = last) through the final layer norm,
  which is diffusers' ``clip_skip`` (stop_at_layer = -(clip_skip + 1)).
- SDXL (two encoders): both encoders' penultimate hidden states, no final norm, concatenated along the features,
  plus the second encoder's projected pooled output ("pooled_output"); ``stop_at_layer`` counts from that
  default, so -1 is diffusers' default and -2 is its clip_skip=1.
- Prompts longer than the tokenizer's window (77 tokens for CLIP) are encoded in windows of ``max_length - 2``
  tokens, each with its own start/end tokens, and concatenated along the sequence (as ComfyUI does); shorter ones
  are tokenized exactly as diffusers does (padded to the window).
- Encoding is bounded: the text is tokenized in slices cut at whitespace (so a 10 MB text never becomes one huge
  token list), at most ``max_chunks`` windows are accepted (``EngineConfig.limits.max_text_chunks``; more raises
  ValueError saying so), and the encoder sees at most ``WINDOWS_PER_PASS`` windows at a time.
"""

from __future__ import annotations

from typing import Any

from ..limits import DEFAULT_LIMITS
from .types import TextEncoder

#: Characters tokenized at a time, and windows run through an encoder in one forward pass.
SLICE_CHARS = 4096
WINDOWS_PER_PASS = 8
_SPACES = (" ", "\n", "\t", "\r")


def _token_ids(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """Token ids of ``text`` (no start/end tokens), tokenized slice by slice; ValueError past ``max_tokens``."""
    ids: list[int] = []
    pos = 0
    while pos < len(text):
        end = min(pos + SLICE_CHARS, len(text))
        if end < len(text):  # cut at whitespace, where CLIP's tokenizers split words anyway
            cut = max(text.rfind(c, pos, end) for c in _SPACES)
            end = cut if cut > pos else end
        ids += tokenizer(text[pos:end], add_special_tokens=False, truncation=False).input_ids
        if len(ids) > max_tokens:
            raise ValueError(f"the text is longer than {max_tokens:,} tokens (it has {len(text):,} characters); "
                             "shorten it, or raise EngineConfig.limits.max_text_chunks")
        pos = end
    return ids


def _windows(tokenizer: Any, text: str, max_chunks: int = DEFAULT_LIMITS.max_text_chunks) -> Any:
    """Token ids [n_windows, max_length]: one padded window, or up to ``max_chunks`` for long prompts."""
    import torch

    length = int(tokenizer.model_max_length)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids = _token_ids(tokenizer, text, max_chunks * (length - 2))
    if len(ids) <= length - 2 or bos is None or eos is None:
        if len(text) > SLICE_CHARS:  # short in tokens but long in characters (spaces): pad the ids ourselves
            row = ([bos] if bos is not None else []) + ids[:length - 2] + ([eos] if eos is not None else [])
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
            return torch.tensor([row + [pad] * (length - len(row))], dtype=torch.long)
        return tokenizer(text, padding="max_length", max_length=length, truncation=True,
                         return_tensors="pt").input_ids
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for start in range(0, len(ids), length - 2):
        chunk = [bos, *ids[start:start + length - 2], eos]
        rows.append(chunk + [pad] * (length - len(chunk)))
    return torch.tensor(rows, dtype=torch.long)


def _final_norm(encoder: Any) -> Any:
    norm = getattr(encoder, "final_layer_norm", None)
    return norm if norm is not None else encoder.text_model.final_layer_norm


def _check_layer(encoder: Any, layer: int) -> None:
    layers = int(encoder.config.num_hidden_layers)
    if -layer > layers:
        raise ValueError(f"stop_at_clip_layer {layer} is deeper than this text encoder's {layers} layers; "
                         f"use a value between -{layers} and -1")


def encode_text(clip: TextEncoder, text: str, device: Any,
                max_chunks: int = DEFAULT_LIMITS.max_text_chunks) -> list[tuple[Any, dict[str, Any]]]:
    """A one-entry CONDITIONING for ``text`` (embeddings [1, T, D] float32 on the CPU, extras); a text longer than
    ``max_chunks`` token windows raises ValueError."""
    import torch

    if not clip.encoders or len(clip.tokenizers) != len(clip.encoders):
        raise ValueError("this CLIP has no text encoder/tokenizer pair; load a checkpoint that includes one")
    sdxl = len(clip.encoders) > 1
    layer = clip.stop_at_layer - 1 if sdxl else clip.stop_at_layer
    parts, pooled = [], None
    with torch.no_grad():
        for index, (tokenizer, encoder) in enumerate(zip(clip.tokenizers, clip.encoders)):
            _check_layer(encoder, layer)
            windows = _windows(tokenizer, text, max_chunks)
            hiddens = []
            for start in range(0, windows.shape[0], WINDOWS_PER_PASS):
                out = encoder(windows[start:start + WINDOWS_PER_PASS].to(device), output_hidden_states=True)
                if sdxl:
                    hidden = out.hidden_states[layer]
                elif layer == -1:
                    hidden = out.last_hidden_state
                else:
                    hidden = _final_norm(encoder)(out.hidden_states[layer])
                hiddens.append(hidden.float().cpu())
                if sdxl and index == len(clip.encoders) - 1 and start == 0:
                    proj = getattr(out, "text_embeds", None)
                    pooled = (proj if proj is not None else out.pooler_output)[:1].float().cpu()
                del out
            hidden = torch.cat(hiddens)
            parts.append(hidden.reshape(1, -1, hidden.shape[-1]))
    lengths = {p.shape[1] for p in parts}
    if len(lengths) > 1:
        raise ValueError(f"the text encoders tokenized the prompt to different lengths {sorted(lengths)}; "
                         "shorten the prompt to one window")
    extras: dict[str, Any] = {}
    if pooled is not None:
        extras["pooled_output"] = pooled
    return [(torch.cat(parts, dim=-1), extras)]
