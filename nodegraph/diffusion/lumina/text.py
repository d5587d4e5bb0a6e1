"""Prompt encoding for Z-Image and Lumina 2, as ComfyUI (``text_encoders/z_image.py``, ``lumina2.py``) and
diffusers' ``ZImagePipeline``/``Lumina2Pipeline`` do it: the second-to-last hidden states of the text model.

- Z-Image (Qwen3-4B): the prompt in Qwen3's chat template as a user turn followed by the assistant's opening
  (``<|im_start|>user\\n{}<|im_end|>\\n<|im_start|>assistant\\n``, what the pipeline's ``apply_chat_template`` with
  ``enable_thinking=True`` gives), no start token; states [1, T, 2560].
- Lumina 2 (Gemma-2-2B): the text with Gemma's start token; states [1, T, 2304]. The system prompt is part of the
  text (CLIPTextEncodeLumina2 prepends it; the pipeline does the same for the positive prompt).

Prompt emphasis as ComfyUI: disabled for Z-Image (only ``\\(``/``\\)`` escapes are undone); for Lumina 2 each
``(text:1.2)`` piece is tokenized on its own and its states are moved away from those of an "empty" prompt (start
token, then padding masked out) by its weight.
CLIPSetLastLayer -3, -4, … takes an earlier layer's states, as ComfyUI's ``clip_layer`` does (-1, the default, keeps
the second-to-last layer these models were trained with).
"""

from __future__ import annotations

from typing import Any

from ..prompt_syntax import parse, unescape

Z_IMAGE_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
#: Lumina 2's system prompts (ComfyUI's CLIPTextEncodeLumina2 and Lumina2Pipeline's default, "superior").
SYSTEM_PROMPTS = {
    "superior": "You are an assistant designed to generate superior images with the superior degree of image-text "
                "alignment based on textual prompts or user prompts.",
    "alignment": "You are an assistant designed to generate high-quality images with the highest degree of "
                 "image-text alignment based on textual prompts.",
}


def lumina2_prompt(system_prompt: str, user_prompt: str) -> str:
    """The text CLIPTextEncodeLumina2 encodes: the named system prompt, ``<Prompt Start>``, the user prompt."""
    if system_prompt not in SYSTEM_PROMPTS:
        raise ValueError(f"system_prompt {system_prompt!r} is not one of {', '.join(SYSTEM_PROMPTS)}")
    return f"{SYSTEM_PROMPTS[system_prompt]} <Prompt Start> {user_prompt}"


#: Tokens per "chunk" of the engine's ``limits.max_text_chunks`` (a CLIP window, without its start and end).
CHUNK_TOKENS = 75


def _tokens(tokenizer: Any, text: str, weighted: bool) -> tuple[list[int], list[float]]:
    """Token ids and weights as ComfyUI's tokenizer gives them: the start token (Gemma's), then each emphasis piece
    (``(text:1.2)``, escapes undone) tokenized on its own; ``weighted`` False takes the text as one piece."""
    pieces = parse(text) if weighted else [(unescape(text), 1.0)]
    ids: list[int] = []
    weights: list[float] = []
    if tokenizer("").input_ids:  # the tokenizer adds a start token (Gemma's <bos>)
        ids, weights = list(tokenizer("").input_ids), [1.0] * len(tokenizer("").input_ids)
    for piece, weight in pieces:
        if piece:
            found = tokenizer(piece, add_special_tokens=False).input_ids
            ids += found
            weights += [float(weight)] * len(found)
    return ids, weights


def _states(clip: Any, text: str, device: Any, max_chunks: int = 0, weighted: bool = False) -> Any:
    import torch

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids, weights = _tokens(tokenizer, text, weighted)
    if max_chunks > 0 and len(ids) > max_chunks * CHUNK_TOKENS:
        raise ValueError(f"the prompt is {len(ids):,} tokens long, more than this engine's limit of "
                         f"{max_chunks * CHUNK_TOKENS:,} ({max_chunks} × {CHUNK_TOKENS}, limits.max_text_chunks); "
                         "shorten it or raise the limit")
    layer = clip.stop_at_layer if clip.stop_at_layer < -1 else -2  # CLIPSetLastLayer -3, -4 … go deeper
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = encoder(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True)
        deepest = len(out.hidden_states) - 1
        if -layer > deepest:
            raise ValueError(f"CLIPSetLastLayer {layer} is deeper than this text encoder's {deepest} layers; use a "
                             f"value from -2 to -{deepest}")
        states = out.hidden_states[layer]
        if any(w != 1.0 for w in weights):  # ComfyUI: weighted tokens move away from an "empty" prompt's states
            empty = torch.full_like(ids_t, int(tokenizer.pad_token_id or 0))
            empty[0, 0] = ids[0]
            mask = torch.zeros_like(ids_t)
            mask[0, 0] = 1
            base = encoder(input_ids=empty, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
            w = torch.tensor(weights, dtype=states.dtype, device=states.device)[None, :, None]
            states = (states - base) * w + base
    return states.float().cpu()


def encode_z_image(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry for Qwen3 (Z-Image): a one-entry CONDITIONING."""
    return [(_states(clip, Z_IMAGE_TEMPLATE.format(text), device, max_chunks), {})]


def encode_lumina2(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry for Gemma 2 (Lumina 2): a one-entry CONDITIONING."""
    return [(_states(clip, text, device, max_chunks, weighted=True), {})]


__all__ = ["SYSTEM_PROMPTS", "Z_IMAGE_TEMPLATE", "encode_lumina2", "encode_z_image", "lumina2_prompt"]
