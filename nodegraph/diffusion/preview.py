"""Cheap sampling previews: a linear latent → RGB projection (fitted once per VAE) and small JPEG bytes.

With ``--preview-method taesd`` (``nodegraph serve`` sets ``$NODEGRAPH_PREVIEW_TAESD`` to models/vae_approx, which the
worker processes inherit), previews are decoded with the TAESD decoder of the sampled model's latent format
(``taesd_decoder.safetensors`` for SD1/2, ``taesdxl_`` SDXL, ``taesd3_`` SD3, ``taef1_`` Flux) when that file is
there, else by the linear projection.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

from .types import LatentFormat

PREVIEW_MAX = 256  # longest side of a latent2rgb preview image, in pixels
TAESD_PREVIEW_MAX = 512  # longest side of a TAESD preview (ComfyUI's MAX_PREVIEW_RESOLUTION)
#: The folder of TAESD decoders to preview with (set by ``serve --preview-method taesd``); unset: latent2rgb.
TAESD_ENV = "NODEGRAPH_PREVIEW_TAESD"


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


@functools.lru_cache(maxsize=4)
def _cached_decoder(folder: str, fmt: LatentFormat, stamp: tuple[int, int]) -> Any:
    from .taesd import decoder_for

    return decoder_for(Path(folder), fmt)


def taesd_decoder(fmt: LatentFormat, folder: str | os.PathLike[str] | None = None) -> Any:
    """The TAESD decoder (``taesd.TinyVAE``) for ``fmt`` from ``folder`` (default ``$NODEGRAPH_PREVIEW_TAESD``), or
    None when previews are not by TAESD or its decoder file is absent; reloaded when the file changes."""
    folder = folder if folder is not None else os.environ.get(TAESD_ENV)
    if not folder:
        return None
    from .taesd import name_for

    name = name_for(fmt)
    path = Path(folder) / f"{name}_decoder.safetensors"
    try:
        st = path.stat()
    except OSError:
        return None
    return _cached_decoder(str(folder), fmt, (st.st_mtime_ns, st.st_size)) if name else None


def taesd_to_rgb(samples: Any, decoder: Any) -> Any:
    """Unscaled latents [B, C, h, w] → RGB in 0..1 [B, H, W, 3] decoded by a TAESD ``decoder`` on the CPU."""
    import torch

    with torch.no_grad():
        img = decoder.decode(samples.detach().float().cpu()).sample
    return ((img + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)


def preview_jpeg(samples: Any, fmt: LatentFormat, quality: int = 80, decoder: Any = None) -> tuple[str, bytes]:
    """("JPEG", bytes) of the first image of a latent batch: decoded by TAESD when ``decoder`` is given or previews
    are by TAESD (``taesd_decoder``), else projected and upscaled to the pixel grid up to PREVIEW_MAX."""
    import numpy as np
    from PIL import Image

    if samples.dim() == 5:  # a video latent [B, C, T, h, w]: its first frame
        samples = samples[:, :, 0]
    decoder = decoder if decoder is not None else taesd_decoder(fmt)
    if decoder is not None and samples.shape[1] == decoder.config.latent_channels:
        rgb = taesd_to_rgb(samples[:1], decoder)[0].numpy()
        img = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))
        img.thumbnail((TAESD_PREVIEW_MAX, TAESD_PREVIEW_MAX))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        return "JPEG", buf.getvalue()
    rgb = latent_to_rgb(samples[:1], fmt)[0].numpy()
    img = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))
    h, w = rgb.shape[:2]
    scale = max(1, min(fmt.downscale, PREVIEW_MAX // max(h, w, 1)))
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "JPEG", buf.getvalue()
