"""Prompt encoding for CLIPTextEncode: CLIP tokenizers + encoders → CONDITIONING, as diffusers' pipelines encode.

- SD1/SD2 (one encoder): the hidden states of layer ``stop_at_layer`` (-1 = last) through the final layer norm,
  which is diffusers' ``clip_skip`` (stop_at_layer = -(clip_skip + 1)).
- SDXL (two encoders): both encoders' penultimate hidden states, no final norm, concatenated along the features,
  plus the second encoder's projected pooled output ("pooled_output"); ``stop_at_layer`` counts from that
  default, so -1 is diffusers' default and -2 is its clip_skip=1.
- Prompts longer than the tokenizer's window (77 tokens for CLIP) are encoded in windows of ``max_length - 2``
  tokens, each with its own start/end tokens, and concatenated along the sequence (as ComfyUI does); shorter ones
  are tokenized exactly as diffusers does (padded to the window).
"""

from __future__ import annotations

from typing import Any

from .types import TextEncoder


def _windows(tokenizer: Any, text: str) -> Any:
    """Token ids [n_windows, max_length]: one padded window, or several for long prompts."""
    import torch

    length = int(tokenizer.model_max_length)
    ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if len(ids) <= length - 2 or bos is None or eos is None:
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


def encode_text(clip: TextEncoder, text: str, device: Any) -> list[tuple[Any, dict[str, Any]]]:
    """A one-entry CONDITIONING for ``text`` (embeddings [1, T, D] float32 on the CPU, extras)."""
    import torch

    if not clip.encoders or len(clip.tokenizers) != len(clip.encoders):
        raise ValueError("this CLIP has no text encoder/tokenizer pair; load a checkpoint that includes one")
    sdxl = len(clip.encoders) > 1
    layer = clip.stop_at_layer - 1 if sdxl else clip.stop_at_layer
    parts, pooled = [], None
    with torch.no_grad():
        for index, (tokenizer, encoder) in enumerate(zip(clip.tokenizers, clip.encoders)):
            _check_layer(encoder, layer)
            ids = _windows(tokenizer, text).to(device)
            out = encoder(ids, output_hidden_states=True)
            if sdxl:
                hidden = out.hidden_states[layer]
            elif layer == -1:
                hidden = out.last_hidden_state
            else:
                hidden = _final_norm(encoder)(out.hidden_states[layer])
            parts.append(hidden.reshape(1, -1, hidden.shape[-1]).float().cpu())
            if sdxl and index == len(clip.encoders) - 1:
                proj = getattr(out, "text_embeds", None)
                pooled = (proj if proj is not None else out.pooler_output)[:1].float().cpu()
    lengths = {p.shape[1] for p in parts}
    if len(lengths) > 1:
        raise ValueError(f"the text encoders tokenized the prompt to different lengths {sorted(lengths)}; "
                         "shorten the prompt to one window")
    extras: dict[str, Any] = {}
    if pooled is not None:
        extras["pooled_output"] = pooled
    return [(torch.cat(parts, dim=-1), extras)]
