"""Prompt encoding for Flux.2, as Flux2Pipeline (dev, Mistral Small 3.x) and Flux2KleinPipeline (Klein, Qwen3) do it:
the prompt in the model's chat template (dev: diffusers' system message), padded to 512 tokens with the attention
mask, run through the language model, and the hidden states of three layers (dev 10/20/30, Klein 9/18/27) stacked
per token into one [1, 512, 3·D] state. The CONDITIONING entry is (states, {}); Flux.2 has no pooled output.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

MAX_TOKENS = 512
#: Mistral Small 3.x's chat format for a system and a user message (its release template renders the same text).
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set text = message['content'] if message['content'] is string "
    "else message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]{% else %}{{ text }}{{ eos_token }}{% endif %}"
    "{% endfor %}")
#: Qwen3's chat format for one user message with thinking off (its release template renders the same text).
QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
    "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def _mistral_inputs(tokenizer: Any, text: str) -> dict:
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

    template = None if getattr(tokenizer, "chat_template", None) else MISTRAL_TEMPLATE
    return tokenizer.apply_chat_template(format_input([text], SYSTEM_MESSAGE), chat_template=template,
                                         add_generation_prompt=False, tokenize=True, return_dict=True,
                                         return_tensors="pt", padding="max_length", truncation=True,
                                         max_length=MAX_TOKENS)


def _qwen3_inputs(tokenizer: Any, text: str) -> dict:
    template = None if getattr(tokenizer, "chat_template", None) else QWEN3_TEMPLATE
    full = tokenizer.apply_chat_template([{"role": "user", "content": text}], chat_template=template, tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    return tokenizer(full, return_tensors="pt", padding="max_length", truncation=True, max_length=MAX_TOKENS)


def layer_states(model: Any, input_ids: Any, attention_mask: Any, layers: tuple[int, ...]) -> Any:
    """[B, T, len(layers)·D]: ``hidden_states[k]`` (the output of layer k - 1, before the final norm) for each k in
    ``layers``, stacked per token as Flux2Pipeline does."""
    import torch

    found: dict[int, Any] = {}
    hooks = []
    for k in layers:
        def keep(_module: Any, _args: Any, output: Any, k: int = k) -> None:
            found[k] = output[0] if isinstance(output, tuple) else output
        hooks.append(model.layers[k - 1].register_forward_hook(keep))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    out = torch.stack([found[k] for k in layers], dim=1)
    b, n, t, d = out.shape
    return out.permute(0, 2, 1, 3).reshape(b, t, n * d)


def encode_flux2(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on a Flux.2 CLIP (CLIPLoader type flux2)."""
    import torch

    if clip.arch != "flux2":
        raise ValueError(f"this CLIP is {clip.arch}, not Flux.2's; load it with CLIPLoader type flux2")
    tokenizer, model = clip.tokenizers[0], clip.encoders[0]
    arch = dict(clip.options).get("flux2_text", "mistral")
    inputs = _mistral_inputs(tokenizer, text) if arch == "mistral" else _qwen3_inputs(tokenizer, text)
    mask = inputs["attention_mask"]
    if int(mask.sum()) >= MAX_TOKENS:
        log.warning("the prompt fills all %d tokens of Flux.2's text encoder; its end was cut off", MAX_TOKENS)
    with torch.no_grad():
        states = layer_states(model, inputs["input_ids"].to(device), mask.to(device), model.flux2_layers)
    return [(states.float().cpu(), {})]


__all__ = ["MAX_TOKENS", "MISTRAL_TEMPLATE", "QWEN3_TEMPLATE", "encode_flux2", "layer_states"]
