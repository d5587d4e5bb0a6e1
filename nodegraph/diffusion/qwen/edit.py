"""Qwen-Image-Edit conditioning: ComfyUI's TextEncodeQwenImageEdit and TextEncodeQwenImageEditPlus.

- Edit: the image scaled ("area") to about 1024² pixels is both what the vision tower sees (in the edit template)
  and, with a VAE, the reference latent ("reference_latents" on the entry).
- Edit Plus (2509): up to three images, each announced as "Picture N:" (N: its input slot); the vision tower sees
  each at about 384² pixels, the VAE encodes each at about 1024² (sides multiples of 8); the edit template is used
  even without images. Edit without an image uses the text-to-image template, as ComfyUI.
"""

from __future__ import annotations

import math
from typing import Any

from .text import VISION, encode_qwen


def _scaled(image: Any, area: int, multiple: int = 1) -> Any:
    """IMAGE [B, H, W, C] → NCHW RGB resized ("area") to about ``area`` pixels, sides rounded to ``multiple``."""
    from nodegraph.imaging import resample

    samples = image.movedim(-1, 1)[:, :3]
    scale = math.sqrt(area / (samples.shape[3] * samples.shape[2]))
    width = max(multiple, round(samples.shape[3] * scale / multiple) * multiple)
    height = max(multiple, round(samples.shape[2] * scale / multiple) * multiple)
    return resample(samples, width, height, "area")


def _vae_encode(ctx: Any, vae: Any, samples: Any) -> Any:
    """Normalised latents of NCHW images in 0..1 (cropped to whole latent cells)."""
    import torch

    with ctx.models.use(vae) as (loaded,), ctx.devices.use(loaded.vae), torch.no_grad():
        d = loaded.downscale
        h, w = samples.shape[-2] // d * d, samples.shape[-1] // d * d
        y, x = (samples.shape[-2] - h) // 2, (samples.shape[-1] - w) // 2
        crop = samples[..., y:y + h, x:x + w]
        param = next(loaded.vae.parameters())
        return loaded.vae.encode(crop.to(ctx.devices.device, param.dtype) * 2.0 - 1.0).latent_dist.mean.float().cpu()


def encode_qwen_edit(ctx: Any, clip: Any, prompt: str, vae: Any = None, images: tuple = (),
                     plus: bool = False) -> list:
    """CONDITIONING of TextEncodeQwenImageEdit (``plus``: TextEncodeQwenImageEditPlus) for ``images`` (IMAGEs)."""
    seen, refs, prefix = [], [], ""
    for n, image in enumerate(images):
        if image is None:
            continue
        vl = _scaled(image, 384 * 384 if plus else 1024 * 1024)
        seen.append(vl[0].movedim(0, -1))
        if vae is not None:
            refs.append(_vae_encode(ctx, vae, _scaled(image, 1024 * 1024, 8) if plus else vl))
        prefix += f"Picture {n + 1}: {VISION}" if plus else VISION
    devices = ctx.devices
    with ctx.models.use(clip) as (loaded,), devices.use(*loaded.encoders):
        cond = encode_qwen(loaded, prefix + prompt, devices.device, seen, edit=plus or bool(seen))
    if refs:
        cond = [(emb, dict(extras, reference_latents=list(extras.get("reference_latents") or []) + refs))
                for emb, extras in cond]
    return cond


__all__ = ["encode_qwen_edit"]
