"""HunyuanDiT prompts: BERT (Chinese CLIP) and mT5-XL states with their attention masks, as ComfyUI's
``HyditModel`` gives them: the BERT states as the CONDITIONING's tensor ([1, 77, 1024], padded with [PAD] to 77
tokens, [CLS]/[SEP] around them), ``attention_mask``, ``conditioning_mt5xl`` ([1, 256, 2048], ``</s>`` then padding
to 256) and ``attention_mask_mt5xl``. Longer prompts are cut at 77/256 tokens, as HunyuanDiTPipeline does.
Prompt weights ``(word:1.2)`` are not applied (the text is used as written).
"""

from __future__ import annotations

from typing import Any

BERT_LENGTH, MT5_LENGTH = 77, 256


def _states(tokenizer: Any, encoder: Any, text: str, length: int, device: Any) -> tuple[Any, Any]:
    import torch

    tokens = tokenizer(text, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    with torch.no_grad():
        states = encoder(ids, attention_mask=mask)[0]
    return states.float().cpu(), mask.cpu()


def encode_pair(clip: Any, bert: str, mt5xl: str, device: Any) -> list[tuple[Any, dict]]:
    """CONDITIONING of CLIPTextEncodeHunyuanDiT: ``bert`` through BERT, ``mt5xl`` through mT5-XL."""
    if getattr(clip, "arch", "") != "hunyuan_dit" or len(clip.encoders) != 2:
        raise ValueError("CLIPTextEncodeHunyuanDiT needs a HunyuanDiT CLIP (BERT + mT5-XL): load the checkpoint "
                         "hunyuan_dit_1.2.safetensors with CheckpointLoaderSimple and connect its CLIP output")
    (bert_tok, t5_tok), (bert_model, t5_model) = clip.tokenizers, clip.encoders
    bert_states, bert_mask = _states(bert_tok, bert_model, bert, BERT_LENGTH, device)
    t5_states, t5_mask = _states(t5_tok, t5_model, mt5xl, MT5_LENGTH, device)
    return [(bert_states, {"attention_mask": bert_mask, "conditioning_mt5xl": t5_states,
                           "attention_mask_mt5xl": t5_mask})]


def encode_hunyuan_dit(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on a HunyuanDiT CLIP (the same text to both encoders)."""
    return encode_pair(clip, text, text, device)


def encode_hunyuan_dit_text(ctx: Any, clip: Any, bert: str, mt5xl: str) -> list:
    """CONDITIONING from a HunyuanDiT CLIP with separate BERT and mT5-XL prompts (CLIPTextEncodeHunyuanDiT)."""
    devices = ctx.devices
    with ctx.models.use(clip) as (loaded,), devices.use(*loaded.encoders):
        return encode_pair(loaded, bert, mt5xl, devices.device)


__all__ = ["BERT_LENGTH", "MT5_LENGTH", "encode_hunyuan_dit", "encode_hunyuan_dit_text", "encode_pair"]
