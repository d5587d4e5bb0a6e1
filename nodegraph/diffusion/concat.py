"""Extra UNet input channels from the conditioning (ComfyUI's ``c_concat``), for UNets wider than their latents.

- InstructPix2Pix UNets (in_channels = 2 x latent channels, SD1 / SDXL): the input is ``cat([x_in, image])`` with
  the entry's ``concat_latent_image`` (InstructPixToPixConditioning) as VAE-encoded, unscaled (ComfyUI's
  ``IP2P.concat_cond`` for SD15/SDXL diffusers-style models), zeros when the entry has none.
- Inpainting UNets (latent channels + 5 = 9 for SD): ``cat([x_in, mask, masked_latent])`` with the entry's
  ``concat_mask`` (1 = repaint) and ``concat_latent_image`` scaled into the model's latent space, as ComfyUI's
  ``BaseModel.concat_cond`` for ``("mask", "masked_image")`` (InpaintModelConditioning).
The concatenation follows the input scaling (``x_in`` is what the UNet would otherwise get), as ComfyUI's apply_model.
"""

from __future__ import annotations

from typing import Any


def extra_channels(model: Any) -> int:
    """How many input channels the UNet takes beyond its latent channels (0 for ordinary UNets)."""
    return int(model.unet.config.in_channels) - int(model.latent.channels)


def supported(model: Any) -> bool:
    """Whether the UNet's input width is one this module fills (ordinary, InstructPix2Pix or inpainting)."""
    extra = extra_channels(model)
    return extra in (0, model.latent.channels, model.latent.channels + 1)


def _fit(t: Any, batch: int, hw: tuple[int, int]) -> Any:
    """``t`` [b, c, h, w] resized bilinearly to ``hw`` and repeated/truncated to ``batch`` (resize_to_batch_size)."""
    import torch

    if tuple(t.shape[-2:]) != tuple(hw):
        t = torch.nn.functional.interpolate(t, size=hw, mode="bilinear", align_corners=False)
    if t.shape[0] < batch:
        t = t.repeat(-(-batch // t.shape[0]), 1, 1, 1)
    return t[:batch]


def prepare(model: Any, extras: dict[str, Any], batch: int, latent_hw: tuple[int, int], device: Any, dtype: Any,
            what: str) -> Any:
    """The entry's extra input channels [batch, extra, h, w] on the device, or None for ordinary UNets."""
    import torch

    extra = extra_channels(model)
    if extra == 0:
        return None
    fmt = model.latent
    image = extras.get("concat_latent_image")
    if extra == fmt.channels:  # InstructPix2Pix
        if image is None:
            return torch.zeros(batch, extra, *latent_hw, device=device, dtype=dtype)
        return _fit(image.float(), batch, latent_hw).to(device, dtype)
    mask = extras.get("concat_mask")
    if extra != fmt.channels + 1 or image is None or mask is None:
        raise ValueError(f"{what}: {model.source} is an inpainting UNet ({model.unet.config.in_channels} input "
                         "channels) and needs the masked image in its conditioning; pass positive and negative "
                         "through InpaintModelConditioning")
    mask = mask.float().reshape(-1, 1, *mask.shape[-2:])
    mask = _fit(mask, batch, latent_hw).round()
    scaled = (image.float() - fmt.shift_factor) * fmt.scaling_factor
    return torch.cat([mask, _fit(scaled, batch, latent_hw)], dim=1).to(device, dtype)


def with_concat(x: Any, entries: list[Any]) -> Any:
    """The UNet input for ``entries`` batched in order: ``x`` (repeated per entry) with their extra channels."""
    import torch

    first = getattr(entries[0], "concat", None)
    if first is None:
        return x if len(entries) == 1 else x.repeat(len(entries), 1, 1, 1)
    parts = []
    for e in entries:
        c = e.concat
        if tuple(c.shape[-2:]) != tuple(x.shape[-2:]):
            raise ValueError("an area/mask conditioning entry cannot be combined with an InstructPix2Pix or "
                             "inpainting UNet's image conditioning; drop the area or use a regular checkpoint")
        parts.append(torch.cat([x, c.to(x.dtype)], dim=1))
    return torch.cat(parts)
