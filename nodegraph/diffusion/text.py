"""Prompt encoding for CLIPTextEncode: CLIP tokenizers + encoders → CONDITIONING, as ComfyUI's SD1/SDXL encoders do.

- Tokens: ComfyUI's tokenization. The prompt is parsed for emphasis (``(word:1.2)``, ``((word))``, ``\\(``; see
  ``prompt_syntax``), split into words at spaces and newlines, and each word tokenized on its own by the model's
  tokenizer (ComfyUI first looks a word up in the vocabulary as written; we do not, so that a prompt without weights
  gets the tokens diffusers' pipelines give it — the same for CLIP's own vocabulary). ``embedding:name`` words
  become the vectors of a textual-inversion embedding (``embeddings``). Words are packed into windows of the
  tokenizer's length (77 for CLIP): start token, up to 75 tokens, end token, padding; a word shorter than 8 tokens
  that does not fit moves whole to the next window, a longer one is split. Every window is encoded on its own
  and the windows are concatenated.
- Layers: SD1/SD2 (one encoder) take the hidden states of layer ``stop_at_layer`` (-1 = last) through the final
  layer norm (diffusers' ``clip_skip`` is stop_at_layer = -(clip_skip + 1)); SDXL takes both encoders' penultimate
  hidden states without the final norm, concatenated along the features, plus the second encoder's projected pooled
  output of the first window ("pooled_output"); ``stop_at_layer`` counts from that default.
- Weights: when any token has a weight other than 1, the "empty" prompt (start, end, padding) is encoded too and
  each weighted token's vector becomes ``(z - z_empty) · weight + z_empty`` (z_empty at the same position); a
  prompt without weights is encoded exactly as before.
- Bounds: words are produced lazily and at most ``max_chunks`` windows are accepted
  (``EngineConfig.limits.max_text_chunks``; more raises ValueError saying so); the encoder sees at most
  ``WINDOWS_PER_PASS`` windows at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from ..limits import DEFAULT_LIMITS
from .embeddings import IDENTIFIER, Embeddings, encoder_keys
from .prompt_syntax import weighted_words
from .types import TextEncoder

log = logging.getLogger(__name__)

#: Characters of one word tokenized at a time, and windows run through an encoder in one forward pass.
SLICE_CHARS = 4096
WINDOWS_PER_PASS = 8
#: A word of at least this many tokens may be split across windows (ComfyUI's ``max_word_length``).
MAX_WORD_TOKENS = 8
#: CLIP's window: start token, 75 tokens, end token.
CLIP_WINDOW = 77

Token = Any  # an int token id, or a [width] tensor (an embedding vector)


def _too_long(max_chunks: int, length: int, text: str) -> ValueError:
    return ValueError(f"the text is longer than {max_chunks * (length - 2):,} tokens ({max_chunks} windows of "
                      f"{length - 2}; it has {len(text):,} characters); shorten it, or raise "
                      "EngineConfig.limits.max_text_chunks")


def _word_tokens(tokenizer: Any, word: str, limit: int) -> list[int]:
    """The token ids of one word (a giant word is tokenized in slices, stopping past ``limit`` tokens)."""
    ids: list[int] = []
    for start in range(0, len(word), SLICE_CHARS):
        ids += tokenizer(word[start:start + SLICE_CHARS], add_special_tokens=False, truncation=False).input_ids
        if len(ids) > limit:
            break
    return ids


def window_length(tokenizer: Any) -> int:
    """The tokenizer's window (``model_max_length``); 77, CLIP's, when it states none (transformers' huge default)."""
    length = int(tokenizer.model_max_length)
    return length if 2 < length <= 65536 else CLIP_WINDOW


def tokenize(tokenizer: Any, text: str, max_chunks: int = DEFAULT_LIMITS.max_text_chunks,
             embeddings: Embeddings | None = None, key: str | None = None) -> list[list[tuple[Token, float]]]:
    """ComfyUI's ``tokenize_with_weights``: windows of ``(token, weight)``, each ``model_max_length`` long.

    ``embeddings`` resolves ``embedding:name`` words (file tensor ``key``); without it they are plain text.
    """
    length = window_length(tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    limit = max_chunks * (length - 2)
    windows: list[list[tuple[Token, float]]] = []
    batch: list[tuple[Token, float]] = [(bos, 1.0)]

    def close(row: list[tuple[Token, float]]) -> None:
        windows.append(row)
        if len(windows) >= max_chunks:
            raise _too_long(max_chunks, length, text)

    for word, weight in weighted_words(text):
        groups: list[list[tuple[Token, float]]] = []
        if embeddings is not None and word.startswith(IDENTIFIER):
            name = word[len(IDENTIFIER):].strip("\n")
            embed, word = embeddings.lookup(name, key)
            if embed is None:
                log.warning("embedding:%s does not exist in %s, ignoring it", name,
                            " or ".join(str(r) for r in embeddings.roots) or "the embeddings folder (none found)")
            else:
                groups.append([(embed[i], weight) for i in range(embed.shape[0])])
        if word:
            groups.append([(t, weight) for t in _word_tokens(tokenizer, word, limit)])
        for group in groups:
            batch = _pack(group, batch, length, eos, pad, bos, close)
    batch.append((eos, 1.0))
    batch += [(pad, 1.0)] * (length - len(batch))
    windows.append(batch)
    return windows


def _pack(group: list[tuple[Token, float]], batch: list[tuple[Token, float]], length: int, eos: int, pad: int,
          bos: int, close: Any) -> list[tuple[Token, float]]:
    """Add one word's tokens to the open window ``batch`` (closing windows as they fill); returns the open one."""
    large = len(group) >= MAX_WORD_TOKENS
    while group:
        if len(group) + len(batch) > length - 1:
            room = length - len(batch) - 1
            if large:
                batch += group[:room]
                group = group[room:]
                batch.append((eos, 1.0))
            else:
                batch.append((eos, 1.0))
                batch += [(pad, 1.0)] * room
            close(batch)
            batch = [(bos, 1.0)]
        else:
            batch += group
            group = []
    return batch


def _final_norm(encoder: Any) -> Any:
    norm = getattr(encoder, "final_layer_norm", None)
    return norm if norm is not None else encoder.text_model.final_layer_norm


def _check_layer(encoder: Any, layer: int) -> None:
    layers = int(encoder.config.num_hidden_layers)
    if -layer > layers:
        raise ValueError(f"stop_at_clip_layer {layer} is deeper than this text encoder's {layers} layers; "
                         f"use a value between -{layers} and -1")


def _ids(windows: list[list[tuple[Token, float]]], width: int, pad: int,
         eos: int) -> tuple[Any, dict[tuple[int, int], Any]]:
    """Token ids [n, length] with a placeholder where embedding vectors go, and {(row, col): vector}.

    A vector of another width than the encoder's is dropped with a warning (the row closes up and is padded at
    the end), as ComfyUI does."""
    import torch

    placeholder = 0 if eos != 0 else 1
    rows, vectors = [], {}
    for r, window in enumerate(windows):
        row: list[int] = []
        for token, _weight in window:
            if isinstance(token, int):
                row.append(token)
            elif token.shape[-1] == width:
                vectors[(r, len(row))] = token
                row.append(placeholder)
            else:
                log.warning("an embedding of width %d does not fit this text encoder (width %d); ignoring it",
                            token.shape[-1], width)
        rows.append(row + [pad] * (len(window) - len(row)))
    return torch.tensor(rows, dtype=torch.long), vectors


def _forward(encoder: Any, ids: Any, vectors: dict[tuple[int, int], Any], row0: int, device: Any) -> Any:
    """The encoder on ``ids`` (rows ``row0``…), with embedding vectors put in place of their placeholders."""
    if not any(row0 <= r < row0 + ids.shape[0] for r, _ in vectors):
        return encoder(ids.to(device), output_hidden_states=True)

    def put(_module: Any, _inputs: Any, output: Any) -> Any:
        output = output.clone()
        for (r, c), vec in vectors.items():
            if row0 <= r < row0 + ids.shape[0]:
                output[r - row0, c] = vec.to(output.device, output.dtype)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(put)
    try:
        return encoder(ids.to(device), output_hidden_states=True)
    finally:
        handle.remove()


def _encode_windows(encoder: Any, ids: Any, vectors: dict[tuple[int, int], Any], layer: int, sdxl: bool,
                    device: Any, want_pooled: bool) -> tuple[Any, Any]:
    """Hidden states [n, length, width] (float32, CPU) of the chosen layer, and the first row's pooled output."""
    import torch

    hiddens, pooled = [], None
    for start in range(0, ids.shape[0], WINDOWS_PER_PASS):
        out = _forward(encoder, ids[start:start + WINDOWS_PER_PASS], vectors, start, device)
        if sdxl:
            hidden = out.hidden_states[layer]
        elif layer == -1:
            hidden = out.last_hidden_state
        else:
            hidden = _final_norm(encoder)(out.hidden_states[layer])
        hiddens.append(hidden.float().cpu())
        if want_pooled and start == 0:
            proj = getattr(out, "text_embeds", None)
            pooled = (proj if proj is not None else out.pooler_output)[:1].float().cpu()
        del out
    return torch.cat(hiddens), pooled


def _empty_ids(tokenizer: Any, length: int) -> Any:
    """ComfyUI's "empty" tokens: start, end, then padding."""
    import torch

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return torch.tensor([[tokenizer.bos_token_id, eos] + [pad] * (length - 2)], dtype=torch.long)


def _plain_windows(tokenizer: Any, text: str) -> list[list[tuple[Token, float]]]:
    """One window of a tokenizer without start/end tokens: its own tokenization, weights all 1."""
    ids = tokenizer(text, padding="max_length", max_length=window_length(tokenizer), truncation=True).input_ids
    return [[(int(t), 1.0) for t in ids]]


def _family_encoder(arch: str) -> Any:
    """``(clip, text, device, max_chunks) -> CONDITIONING`` for a family with its own text encoders, else None."""
    from .families import TEXT_ENCODERS, lookup

    return lookup(TEXT_ENCODERS, arch)


def encode_text(clip: TextEncoder, text: str, device: Any, max_chunks: int = DEFAULT_LIMITS.max_text_chunks,
                embeddings: Embeddings | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """A one-entry CONDITIONING for ``text`` (embeddings [1, T, D] float32 on the CPU, extras); a text longer than
    ``max_chunks`` token windows raises ValueError. ``embeddings`` resolves ``embedding:name`` words."""
    import torch

    family = _family_encoder(clip.arch)
    if family is not None:  # text encoders of the flow-matching and video families have their own modules
        return family(clip, text, device, max_chunks)
    if not clip.encoders or len(clip.tokenizers) != len(clip.encoders):
        raise ValueError("this CLIP has no text encoder/tokenizer pair; load a checkpoint that includes one")
    sdxl = len(clip.encoders) > 1
    layer = clip.stop_at_layer - 1 if sdxl else clip.stop_at_layer
    keys = encoder_keys(clip.arch, len(clip.encoders))
    parts, pooled = [], None
    with torch.no_grad():
        for index, (tokenizer, encoder) in enumerate(zip(clip.tokenizers, clip.encoders)):
            _check_layer(encoder, layer)
            if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
                windows = _plain_windows(tokenizer, text)
            else:
                windows = tokenize(tokenizer, text, max_chunks, embeddings, keys[index])
            width = int(encoder.config.hidden_size)
            eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
            ids, vectors = _ids(windows, width, pad, eos)
            last = index == len(clip.encoders) - 1
            hidden, first_pooled = _encode_windows(encoder, ids, vectors, layer, sdxl, device, sdxl and last)
            if first_pooled is not None:
                pooled = first_pooled
            weights = torch.tensor([[w for _t, w in window] for window in windows], dtype=torch.float32)
            if bool((weights != 1.0).any()):
                empty, _ = _encode_windows(encoder, _empty_ids(tokenizer, ids.shape[1]), {}, layer, sdxl, device,
                                           False)
                w = weights[..., None]
                hidden = torch.where(w != 1.0, (hidden - empty) * w + empty, hidden)
            parts.append(hidden.reshape(1, -1, hidden.shape[-1]))
    cut = min(p.shape[1] for p in parts)
    extras: dict[str, Any] = {}
    if pooled is not None:
        extras["pooled_output"] = pooled
    return [(torch.cat([p[:, :cut] for p in parts], dim=-1), extras)]


def encode_prompt(ctx: Any, clip: Any, text: str) -> list[tuple[Any, dict[str, Any]]]:
    """CLIPTextEncode's CONDITIONING: ``text`` encoded on the engine's device with the CLIP's LoRA/merge patches,
    its layer choice, and ``embedding:name`` words read from the ``models/embeddings`` folder (what
    ``ctx.models.encode_text`` does for every node)."""
    return ctx.models.encode_text(clip, text)
