"""Line plots drawn with Pillow (already a dependency; matplotlib would add ~40 MB and a font cache for a few lines).

``line_plot`` draws one or more series against their index on shared axes, optionally on a log scale, with the
axis range written at the ends and a legend: enough for a loss curve or a noise schedule. The output is
deterministic (Pillow's built-in bitmap font), so a plot's pixels can be tested.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

PALETTE = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_plot(series: Mapping[str, Sequence[float] | np.ndarray], width: int = 512, height: int = 320, title: str = "",
              xlabel: str = "", log_y: bool = False, x_values: Sequence[float] | None = None) -> np.ndarray:
    """An RGB uint8 [height, width, 3] plot of ``series`` (name → values), x = index or ``x_values``."""
    from PIL import Image, ImageDraw, ImageFont

    if width < 64 or height < 64:
        raise ValueError(f"a plot needs at least 64×64 pixels, not {width}×{height}")
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 48, 8, 18 if title else 8, 30
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    if title:
        draw.text((left, 3), title, fill=(0, 0, 0), font=font)

    def tr(v: float) -> float:
        return math.log10(max(v, 1e-12)) if log_y else v

    finite = [tr(float(v)) for vals in series.values() for v in vals if math.isfinite(float(v))]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    longest = max((len(v) for v in series.values()), default=1)
    xs_all = list(x_values) if x_values is not None else list(range(longest))
    xlo, xhi = (min(xs_all), max(xs_all)) if xs_all else (0, 1)
    xhi = xhi if xhi > xlo else xlo + 1
    for k, (name, vals) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        xs = list(x_values)[: len(vals)] if x_values is not None else list(range(len(vals)))
        pts = [(x0 + (float(x) - xlo) / (xhi - xlo) * (x1 - x0), y1 - (tr(float(v)) - lo) / (hi - lo) * (y1 - y0))
               for x, v in zip(xs, vals) if math.isfinite(float(v))]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
        draw.text((x1 - 110, y0 + 4 + 12 * k), name, fill=color, font=font)
    top_label, low_label = (10 ** hi, 10 ** lo) if log_y else (hi, lo)
    draw.text((2, y0), _fmt(top_label), fill=(0, 0, 0), font=font)
    draw.text((2, y1 - 10), _fmt(low_label), fill=(0, 0, 0), font=font)
    draw.text((x0, y1 + 4), _fmt(xlo), fill=(0, 0, 0), font=font)
    draw.text((x1 - 30, y1 + 4), _fmt(xhi), fill=(0, 0, 0), font=font)
    if xlabel:
        draw.text(((x0 + x1) // 2 - 3 * len(xlabel), y1 + 16), xlabel, fill=(0, 0, 0), font=font)
    if log_y:
        draw.text((2, (y0 + y1) // 2), "log", fill=(0, 0, 0), font=font)
    return np.asarray(img, dtype=np.uint8)


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile a batch [N, H, W, C] into rows of ``columns`` (blank cells at the end): [rows·H, columns·W, C]."""
    n, h, w, c = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    out = np.ones((rows * h, columns * w, c), dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, columns)
        out[r * h:(r + 1) * h, col * w:(col + 1) * w] = images[i]
    return out
