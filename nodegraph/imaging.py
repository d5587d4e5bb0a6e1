"""Conversions between ComfyUI's IMAGE/MASK tensors and Pillow images, and PNG writing with text chunks."""

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


def next_counter(folder: Path, stem: str) -> int:
    """The next free counter for files named ``{stem}_{counter:05}_.png`` in ``folder``."""
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_?\.png$")
    best = 0
    if folder.is_dir():
        for path in folder.iterdir():
            m = pattern.match(path.name)
            if m:
                best = max(best, int(m.group(1)))
    return best + 1


def save_pngs(images: Iterable[Image.Image], root: Path, prefix: str, text: dict[str, Any] | None = None,
              compress_level: int = 4) -> list[dict[str, str]]:
    """Save images under ``root`` as ``{prefix}_{counter:05}_.png`` with text chunks; returns UI entries."""
    from .config import safe_join

    subfolder, _, stem = prefix.replace("\\", "/").rpartition("/")
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
