"""Prompt encoding for Qwen-Image, as QwenImagePipeline does it: the prompt in Qwen-Image's chat template, run
through Qwen2.5-VL's language model, the last layer's hidden states with the template's first 34 tokens (the
system message, in the Qwen2 vocabulary) dropped. The CONDITIONING entry is (states [1, T, 3584], {}).

Qwen-Image-Edit (QwenImageEditPipeline / ComfyUI's TextEncodeQwenImageEdit): the edit template (64 tokens dropped),
each input image as ``<|vision_start|><|image_pad|><|vision_end|>`` expanded to its merged patch count and seen by
the vision tower (Qwen2.5-VL's image processor: 14-pixel patches, 2×2 merge, CLIP mean/std).
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
EDIT_TEMPLATE = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, "
                 "objects, background), then explain how the user's text instruction should alter or modify the "
                 "image. Generate a new image that meets the user's requirements while maintaining consistency with "
                 "the original input where appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
                 "<|im_start|>assistant\n")
EDIT_DROP_TOKENS = 64
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_PAD = "<|image_pad|>"


def image_processor() -> Any:
    """Qwen2.5-VL's image processor as released (pixels between 56² and 3584²)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384})


def _vision_inputs(text: str, images: list, device: Any, dtype: Any) -> tuple[str, dict]:
    """``text`` with each image pad expanded to its token count, and the vision tower's inputs."""
    import torch

    if text.count(IMAGE_PAD) != len(images):
        raise ValueError(f"the prompt has {text.count(IMAGE_PAD)} image placeholders for {len(images)} images")
    proc = image_processor()
    pixels = [(img[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).numpy() for img in images]
    out = proc(images=pixels, return_tensors="pt")
    grid = out["image_grid_thw"]
    parts = text.split(IMAGE_PAD)
    merge = int(proc.merge_size) ** 2
    text = parts[0] + "".join(IMAGE_PAD * (int(g.prod()) // merge) + p for g, p in zip(grid, parts[1:]))
    return text, {"pixel_values": out["pixel_values"].to(device, dtype), "image_grid_thw": grid.to(device)}


def encode_qwen(clip: Any, text: str, device: Any, images: list | None = None,
                edit: bool = False) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for a Qwen-Image CLIP (Qwen2.5-VL); ``edit`` uses the edit template, whose
    ``<|image_pad|>`` placeholders take ``images`` ([H, W, 3] in 0..1, one per placeholder)."""
    import torch

    if clip.arch != "qwen_image":
        raise ValueError(f"this CLIP is {clip.arch}, not Qwen2.5-VL; load it with CLIPLoader type qwen_image")
    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    template, drop = (EDIT_TEMPLATE, EDIT_DROP_TOKENS) if edit else (TEMPLATE, DROP_TOKENS)
    full, vision = template.format(text), {}
    if images:
        full, vision = _vision_inputs(full, images, device, next(encoder.parameters()).dtype)
    ids = tokenizer(full).input_ids
    pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD) if images else None
    length = len(ids) - drop - (ids.count(pad) if images else 0)
    if length > MAX_TOKENS:
        raise ValueError(f"the prompt is {length:,} tokens long, more than Qwen-Image's {MAX_TOKENS:,}; shorten it")
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = encoder.model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True,
                            **vision)
    states = out.hidden_states[-1][:, drop:]
    return [(states.float().cpu(), {})]


def encode_qwen_prompt(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple[Any, dict]]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on a Qwen-Image CLIP (its own length limit)."""
    return encode_qwen(clip, text, device)


__all__ = ["DROP_TOKENS", "encode_qwen_prompt", "EDIT_DROP_TOKENS", "EDIT_TEMPLATE", "MAX_TOKENS", "TEMPLATE", "VISION", "encode_qwen",
           "image_processor"]
