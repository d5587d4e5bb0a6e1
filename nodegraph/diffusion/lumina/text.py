"""Prompt encoding for Z-Image and Lumina 2, as ComfyUI (``text_encoders/z_image.py``, ``lumina2.py``) and
diffusers' ``ZImagePipeline``/``Lumina2Pipeline`` do it: the second-to-last hidden states of the text model.

- Z-Image (Qwen3-4B): the prompt in Qwen3's chat template as a user turn followed by the assistant's opening
  (``<|im_start|>user\\n{}<|im_end|>\\n<|im_start|>assistant\\n``, what the pipeline's ``apply_chat_template`` with
  ``enable_thinking=True`` gives), no start token; states [1, T, 2560].
- Lumina 2 (Gemma-2-2B): the text with Gemma's start token; states [1, T, 2304]. The system prompt is part of the
  text (CLIPTextEncodeLumina2 prepends it; the pipeline does the same for the positive prompt).

Prompt weights are not parsed (ComfyUI disables them for Z-Image; for Lumina 2 the text is taken as written).
CLIPSetLastLayer -3, -4, … takes an earlier layer's states, as ComfyUI's ``clip_layer`` does (-1, the default, keeps
the second-to-last layer these models were trained with).
"""

from __future__ import annotations

from typing import Any

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


def _states(clip: Any, text: str, device: Any, max_chunks: int = 0) -> Any:
    import torch

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text).input_ids
    if max_chunks > 0 and len(ids) > max_chunks * CHUNK_TOKENS:
        raise ValueError(f"the prompt is {len(ids):,} tokens long, more than this engine's limit of "
                         f"{max_chunks * CHUNK_TOKENS:,} ({max_chunks} × {CHUNK_TOKENS}, limits.max_text_chunks); "
                         "shorten it or raise the limit")
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = encoder(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True)
    layer = clip.stop_at_layer if clip.stop_at_layer < -1 else -2  # CLIPSetLastLayer -3, -4 … go deeper
    if -layer >= len(out.hidden_states):
        raise ValueError(f"CLIPSetLastLayer {layer} is deeper than this text encoder's "
                         f"{len(out.hidden_states) - 1} layers; use a value from -2 to -{len(out.hidden_states) - 1}")
    return out.hidden_states[layer].float().cpu()


def encode_z_image(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry for Qwen3 (Z-Image): a one-entry CONDITIONING."""
    return [(_states(clip, Z_IMAGE_TEMPLATE.format(text), device, max_chunks), {})]


def encode_lumina2(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry for Gemma 2 (Lumina 2): a one-entry CONDITIONING."""
    return [(_states(clip, text, device, max_chunks), {})]


__all__ = ["SYSTEM_PROMPTS", "Z_IMAGE_TEMPLATE", "encode_lumina2", "encode_z_image", "lumina2_prompt"]
