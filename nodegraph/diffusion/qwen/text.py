"""Prompt encoding for Qwen-Image, as QwenImagePipeline does it: the prompt in Qwen-Image's chat template, run
through Qwen2.5-VL's language model, the last layer's hidden states with the template's first 34 tokens (the
system message, in the Qwen2 vocabulary) dropped. The CONDITIONING entry is (states [1, T, 3584], {}).
"""

from __future__ import annotations

from typing import Any

TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
#: Tokens of the template's system part, dropped from the hidden states (diffusers' ``prompt_template_encode_start_idx``).
DROP_TOKENS = 34
#: Longest prompt (tokens) QwenImagePipeline accepts.
MAX_TOKENS = 1024


def encode_qwen(clip: Any, text: str, device: Any) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for a Qwen-Image CLIP (Qwen2.5-VL)."""
    import torch

    if clip.arch != "qwen_image":
        raise ValueError(f"this CLIP is {clip.arch}, not Qwen2.5-VL; load it with CLIPLoader type qwen_image")
    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(TEMPLATE.format(text)).input_ids
    if len(ids) - DROP_TOKENS > MAX_TOKENS:
        raise ValueError(f"the prompt is {len(ids) - DROP_TOKENS:,} tokens long, more than Qwen-Image's "
                         f"{MAX_TOKENS:,}; shorten it")
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = encoder.model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True)
    states = out.hidden_states[-1][:, DROP_TOKENS:]
    return [(states.float().cpu(), {})]


__all__ = ["DROP_TOKENS", "MAX_TOKENS", "TEMPLATE", "encode_qwen"]
