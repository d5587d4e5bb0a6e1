"""Conversions between ComfyUI's IMAGE/MASK tensors and Pillow images, PNG writing with text chunks, and resizing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

from PIL import Image, PngImagePlugin


def pil_to_image(img: Image.Image) -> Any:
    """A Pillow image as an IMAGE tensor [1, H, W, 3] float32 in 0..1."""
    import numpy as np
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def pil_to_mask(img: Image.Image, channel: str = "A") -> Any:
    """One channel of a Pillow image as a MASK tensor [1, H, W] in 0..1 (alpha is inverted, as ComfyUI does)."""
    import numpy as np
    import torch

    if channel == "A" and "A" not in img.getbands():
        return torch.zeros((1, img.height, img.width), dtype=torch.float32)
    band = img.convert("RGBA").getchannel(channel) if channel in "RGBA" else img.convert("L")
    arr = torch.from_numpy(np.asarray(band, dtype=np.float32).copy()) / 255.0
    return (1.0 - arr if channel == "A" else arr)[None]


def image_to_pils(images: Any) -> list[Image.Image]:
    """An IMAGE tensor [B, H, W, C] in 0..1 as a list of Pillow RGB images."""
    import numpy as np

    arr = images.detach().float().cpu().clamp(0, 1).numpy()
    return [Image.fromarray(np.round(a * 255.0).astype(np.uint8)) for a in arr]


def next_counter(folder: Path, stem: str, suffix: str = ".png") -> int:
    """The next free counter for files named ``{stem}_{counter:05}_{suffix}`` in ``folder``."""
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_?{re.escape(suffix)}$")
    best = 0
    if folder.is_dir():
        for path in folder.iterdir():
            m = pattern.match(path.name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


def create_numbered(root: Path, prefix: str, suffix: str) -> tuple[Any, dict[str, str]]:
    """Create ``{prefix}_{counter:05}_{suffix}`` under ``root`` exclusively (``prefix`` may hold a subfolder);
    returns (open binary file, UI entry without its type). Never overwrites, never leaves ``root``."""
    from .config import safe_join
    from .paths import check_component

    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
    stem = stem or "file"
    check_component(f"{stem}_00000_{suffix}", "filename_prefix")
    folder = safe_join(root, subfolder) if subfolder else root.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, stem, suffix)
    while True:
        name = f"{stem}_{counter:05}_{suffix}"
        try:
            return open(folder / name, "xb"), {"filename": name, "subfolder": subfolder}
        except FileExistsError:
            counter += 1


def save_pngs(images: Iterable[Image.Image], root: Path, prefix: str, text: dict[str, Any] | None = None,
              compress_level: int = 4) -> list[dict[str, str]]:
    """Save images under ``root`` as ``{prefix}_{counter:05}_.png`` with text chunks; returns UI entries."""
    from .config import safe_join
    from .paths import check_component

    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
    check_component(f"{stem or 'image'}_00000_.png", "filename_prefix")  # NUL, control characters, too long
    folder = safe_join(root, subfolder) if subfolder else root.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, stem or "image")
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    entries = []
    for img in images:
        while True:  # exclusive creation: processes saving into one folder (Ray workers) never overwrite each other
            name = f"{stem or 'image'}_{counter:05}_.png"
            try:
                handle = open(folder / name, "xb")
            except FileExistsError:
                counter += 1
                continue
            break
        with handle:
            img.save(handle, format="PNG", pnginfo=info, compress_level=compress_level)
        entries.append({"filename": name, "subfolder": subfolder, "type": ""})
        counter += 1
    return entries


# ---- resizing NCHW tensors (images moved to channels-first, and latents) ------------------------------------------

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
