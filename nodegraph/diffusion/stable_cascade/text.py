"""Stable Cascade's prompt encoding (ComfyUI's StableCascadeClipModel): CLIP-G's last hidden states without the final
layer norm (``hidden_states[stop_at_layer]``), with an attention mask over the prompt's tokens, and the projected
pooled output, as StableCascadePriorPipeline's ``encode_prompt``; prompt weights and ``embedding:`` words as for SD
(``text.tokenize``), long prompts in 77-token windows side by side."""

from __future__ import annotations

from typing import Any

from ..text import _empty_ids, _ids, tokenize


def _mask(ids: Any, eos: int) -> Any:
    """1 up to and including each row's first end token, 0 on the padding after it."""
    import torch

    mask = torch.ones_like(ids)
    for r in range(ids.shape[0]):
        ends = (ids[r] == eos).nonzero()
        if len(ends):
            mask[r, int(ends[0]) + 1:] = 0
    return mask


def _run(encoder: Any, ids: Any, layer: int, device: Any, eos: int, vectors: dict | None = None) -> tuple[Any, Any]:
    from ..text import _forward

    out = _forward(_Masked(encoder, _mask(ids, eos).to(device)), ids, vectors or {}, 0, device)
    return out.hidden_states[layer].float().cpu(), out.text_embeds.float().cpu()


class _Masked:
    """``encoder`` called with an attention mask (for ``text._forward``'s embedding-vector hook)."""

    def __init__(self, encoder: Any, mask: Any) -> None:
        self.encoder, self.mask = encoder, mask

    def get_input_embeddings(self) -> Any:
        """The wrapped encoder's token embedding."""
        return self.encoder.get_input_embeddings()

    def __call__(self, ids: Any, output_hidden_states: bool = True) -> Any:
        return self.encoder(ids, attention_mask=self.mask, output_hidden_states=output_hidden_states)


def encode_cascade(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict[str, Any]]]:
    """``families.TEXT_ENCODERS`` entry: a one-entry CONDITIONING (hidden states [1, 77·n, 1280], pooled_output)."""
    import torch

    if not clip.encoders or not clip.tokenizers:
        raise ValueError("this Stable Cascade checkpoint carries no text encoder; encode prompts with the stage C "
                         "checkpoint's CLIP or load CLIP-G with CLIPLoader type stable_cascade")
    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    layer = int(clip.stop_at_layer)
    windows = tokenize(tokenizer, text, max_chunks, None, "clip_g")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids, vectors = _ids(windows, int(encoder.config.hidden_size), pad, eos)
    with torch.no_grad():
        hidden, pooled = _run(encoder, ids, layer, device, eos, vectors)
        weights = torch.tensor([[w for _t, w in window] for window in windows], dtype=torch.float32)
        if bool((weights != 1.0).any()):
            empty, _ = _run(encoder, _empty_ids(tokenizer, ids.shape[1]), layer, device, eos)
            w = weights[..., None]
            hidden = torch.where(w != 1.0, (hidden - empty) * w + empty, hidden)
    return [(hidden.reshape(1, -1, hidden.shape[-1]), {"pooled_output": pooled[:1]})]


__all__ = ["encode_cascade"]
