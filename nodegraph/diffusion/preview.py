"""Cheap sampling previews: a linear latent → RGB projection (fitted once per VAE) and small JPEG bytes."""

from __future__ import annotations

import io
from typing import Any

from .types import LatentFormat

PREVIEW_MAX = 256  # longest side of a preview image, in pixels


def fit_latent_rgb(vae: Any, size: int = 8, count: int = 4, seed: int = 0) -> tuple[tuple[float, float, float], ...]:
    """Least-squares fit of RGB (-1..1, averaged per latent cell) on unscaled latents, from one tiny decode."""
    import torch
    import torch.nn.functional as F

    channels = int(vae.config.latent_channels)
    scaling = float(getattr(vae.config, "scaling_factor", None) or 1.0)
    gen = torch.Generator("cpu").manual_seed(seed)
    # Smooth random latents at the scale the UNet produces (unit variance once scaled).
    z = torch.randn(count, channels, size // 2, size // 2, generator=gen)
    z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False) / scaling
    param = next(vae.parameters())
    with torch.no_grad():
        img = vae.decode(z.to(param.device, param.dtype)).sample.float().cpu()
    cells = F.adaptive_avg_pool2d(img, (size, size))  # [N, 3, size, size]
    x = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(count * size * size, 1)], dim=1)
    y = cells.permute(0, 2, 3, 1).reshape(-1, 3)
    sol = torch.linalg.lstsq(x.double(), y.double()).solution.float()  # [channels + 1, 3]
    return tuple(tuple(float(v) for v in row) for row in sol.tolist())  # type: ignore[return-value]


def latent_to_rgb(samples: Any, fmt: LatentFormat) -> Any:
    """Unscaled latents [B, C, h, w] → RGB in 0..1 [B, h, w, 3] by the format's projection (or a plain fallback)."""
    import torch

    z = samples.detach().float().cpu()
    if fmt.rgb is not None and len(fmt.rgb) == z.shape[1] + 1:
        proj = torch.tensor(fmt.rgb, dtype=torch.float32)
        rgb = torch.einsum("bchw,cr->bhwr", z, proj[:-1]) + proj[-1]
    else:  # no projection fitted: show the first three channels, normalised
        chans = z[:, [i % z.shape[1] for i in range(3)]] * fmt.scaling_factor
        rgb = torch.tanh(chans).permute(0, 2, 3, 1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def preview_jpeg(samples: Any, fmt: LatentFormat, quality: int = 80) -> tuple[str, bytes]:
    """("JPEG", bytes) of the first image of a latent batch, upscaled to the pixel grid up to PREVIEW_MAX."""
    import numpy as np
    from PIL import Image

    rgb = latent_to_rgb(samples[:1], fmt)[0].numpy()
    img = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))
    h, w = rgb.shape[:2]
    scale = max(1, min(fmt.downscale, PREVIEW_MAX // max(h, w, 1)))
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "JPEG", buf.getvalue()
