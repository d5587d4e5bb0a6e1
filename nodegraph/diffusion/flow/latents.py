"""Flux latents as token sequences: 2×2 patches packed into tokens, and the position ids the transformer ropes.

``pack`` is diffusers' ``FluxPipeline._pack_latents`` layout ([B, C, h, w] → [B, h/2 · w/2, 4C]); odd sizes are
padded circularly to even ones first (as ComfyUI pads to the patch size) and cropped off again by ``unpack``.
Image ids are (index, row, column); index 0 is the image being made, 1.. are reference latents (Kontext).
"""

from __future__ import annotations

from typing import Any


def pad_even(x: Any) -> Any:
    """``x`` [B, C, h, w] padded circularly to even h and w."""
    import torch.nn.functional as F

    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    return F.pad(x, (0, pw, 0, ph), mode="circular") if ph or pw else x


def pack(x: Any) -> Any:
    """[B, C, h, w] (even h, w) → [B, h/2 · w/2, 4C] tokens."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: Any, channels: int, h: int, w: int) -> Any:
    """[B, ceil(h/2) · ceil(w/2), 4C] tokens → [B, C, h, w] (padding cropped)."""
    b = tokens.shape[0]
    hh, ww = (h + 1) // 2, (w + 1) // 2
    x = tokens.view(b, hh, ww, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, hh * 2, ww * 2)[:, :, :h, :w]


def image_ids(h: int, w: int, index: int = 0, device: Any = None, dtype: Any = None) -> Any:
    """Position ids [ceil(h/2) · ceil(w/2), 3] of a latent of h × w cells: (index, row, column)."""
    import torch

    hh, ww = (h + 1) // 2, (w + 1) // 2
    ids = torch.zeros(hh, ww, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(hh)[:, None]
    ids[..., 2] = torch.arange(ww)[None, :]
    return ids.reshape(hh * ww, 3).to(device=device, dtype=dtype)


def text_ids(length: int, device: Any = None, dtype: Any = None) -> Any:
    """Position ids [T, 3] of the text tokens (all zero)."""
    import torch

    return torch.zeros(length, 3, device=device, dtype=dtype)


__all__ = ["image_ids", "pack", "pad_even", "text_ids", "unpack"]
