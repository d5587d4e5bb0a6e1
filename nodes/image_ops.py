"""Image resizing nodes (ImageScale, ImageScaleBy) and the resampling helper the latent nodes share."""

from __future__ import annotations

from typing import Any

from nodegraph import Combo, Float, Int, Link, Node, Output, hookimpl

MAX_SIZE = 16384
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP = ("disabled", "center")


def center_crop(samples: Any, width: int, height: int) -> Any:
    """Crop NCHW ``samples`` around the centre to the aspect ratio width:height."""
    h, w = samples.shape[-2:]
    old, new = w / h, width / height
    if old > new:
        keep = max(1, round(w * new / old))
        x = (w - keep) // 2
        return samples[..., :, x:x + keep]
    if old < new:
        keep = max(1, round(h * old / new))
        y = (h - keep) // 2
        return samples[..., y:y + keep, :]
    return samples


def _lanczos(samples: Any, width: int, height: int) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for img in samples.clamp(0, 1).cpu():
        arr = np.round(img.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
        pil = Image.fromarray(arr if arr.shape[2] > 1 else arr[:, :, 0])
        res = np.asarray(pil.resize((width, height), Image.LANCZOS), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(res.reshape(height, width, -1).copy()).permute(2, 0, 1))
    return torch.stack(out).to(samples.dtype)


def _bislerp(samples: Any, width: int, height: int) -> Any:
    """Bilinear resampling that interpolates each cell's channel vector spherically (keeps latent magnitudes)."""
    import torch

    def along(x: Any, size: int, dim: int) -> Any:
        n = x.shape[dim]
        pos = (torch.arange(size, dtype=torch.float64) + 0.5) * n / size - 0.5
        lo = pos.floor().clamp(0, n - 1).long()
        hi = (lo + 1).clamp(max=n - 1)
        frac = (pos - lo).clamp(0, 1).float()
        a, b = x.index_select(dim, lo), x.index_select(dim, hi)
        shape = [1] * x.dim()
        shape[dim] = size
        frac = frac.reshape(shape)
        na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
        ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
        dot = (ua * ub).sum(1, keepdim=True).clamp(-1, 1)
        omega = torch.acos(dot)
        so = torch.sin(omega)
        ok = so > 1e-4
        wa = torch.where(ok, torch.sin((1 - frac) * omega) / so.clamp_min(1e-8), 1 - frac)
        wb = torch.where(ok, torch.sin(frac * omega) / so.clamp_min(1e-8), frac)
        direction = wa * ua + wb * ub
        return direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8) * ((1 - frac) * na + frac * nb)

    return along(along(samples.float(), height, 2), width, 3).to(samples.dtype)


def resample(samples: Any, width: int, height: int, method: str, crop: str = "disabled") -> Any:
    """Resize NCHW ``samples`` to height × width with one of the upscale methods (after an optional crop)."""
    import torch.nn.functional as F

    if crop == "center":
        samples = center_crop(samples, width, height)
    if tuple(samples.shape[-2:]) == (height, width):
        return samples.clone()
    if method == "lanczos":
        return _lanczos(samples, width, height)
    if method == "bislerp":
        return _bislerp(samples, width, height)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples.float(), size=(height, width), mode=method, **kwargs).to(samples.dtype)


def target_size(h: int, w: int, width: int, height: int) -> tuple[int, int]:
    """(height, width) to scale to; a 0 keeps the aspect ratio from the other side (both 0: unchanged)."""
    if width == 0 and height == 0:
        return h, w
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    return height, width


def _scale_images(image: Any, width: int, height: int, method: str, crop: str) -> Any:
    out = resample(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)
    return out.clamp(0.0, 1.0) if method in ("bicubic", "lanczos") else out


class ImageScale(Node):
    """Resize images to a width and height (0 keeps the aspect ratio)."""

    DISPLAY_NAME = "Upscale Image"
    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"), "upscale_method": Combo(IMAGE_METHODS),
              "width": Int(512, min=0, max=MAX_SIZE, step=1), "height": Int(512, min=0, max=MAX_SIZE, step=1),
              "crop": Combo(CROP)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, width: int, height: int, crop: str):
        h, w = target_size(image.shape[1], image.shape[2], width, height)
        return (_scale_images(image, w, h, upscale_method, crop),)


class ImageScaleBy(Node):
    """Resize images by a factor."""

    DISPLAY_NAME = "Upscale Image By"
    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"), "upscale_method": Combo(IMAGE_METHODS),
              "scale_by": Float(1.0, min=0.01, max=8.0, step=0.01)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, scale_by: float):
        h, w = max(1, round(image.shape[1] * scale_by)), max(1, round(image.shape[2] * scale_by))
        return (_scale_images(image, w, h, upscale_method, "disabled"),)


@hookimpl
def nodegraph_nodes():
    """The image resizing nodes."""
    return [ImageScale, ImageScaleBy]
