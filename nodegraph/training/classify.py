"""Classify a (generated) shape image with plain pixel statistics.

* background colour: median of the border pixels -> nearest palette colour;
* foreground colour: pixels clearly away from the background -> median -> nearest palette colour;
* shape: the largest connected foreground blob, measured by its fill ratio of the bounding box
  (circle ~0.785, square ~1.0, triangle ~0.5) and its top/bottom mass balance (a triangle
  pointing up keeps ~1/4 of its area in the upper half of its box).
"""

from __future__ import annotations

import numpy as np

from .shapes import COLOR_NAMES, COLORS, SHAPES, rgb_of

_PALETTE = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.float32)


def _palette(names: tuple[str, ...]) -> np.ndarray:
    return _PALETTE if names == COLOR_NAMES else np.array([rgb_of(c) for c in names], dtype=np.float32)


def nearest_color(rgb: np.ndarray, names: tuple[str, ...] = COLOR_NAMES) -> str:
    """The palette colour (of ``names``: the 8 base colours unless extra ones are added) nearest ``rgb``."""
    d = ((_palette(names) - np.asarray(rgb, np.float32)[None]) ** 2).sum(1)
    return names[int(d.argmin())]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    try:
        from scipy import ndimage
    except Exception:  # pragma: no cover - scipy is a dependency, but be safe
        return mask
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    blob = lab == counts.argmax()
    return ndimage.binary_fill_holes(blob)


def shape_features(mask: np.ndarray) -> dict[str, float]:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return {"fill": 0.0, "top_frac": 0.5, "area": 0.0, "aspect": 1.0}
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    area = float(len(ys))
    fill = area / float(h * w)
    ymid = (y0 + y1) / 2.0
    top = float((ys + 0.5 < ymid).sum())
    return {"fill": fill, "top_frac": top / area, "area": area, "aspect": w / max(h, 1)}


def classify_shape(mask: np.ndarray, shape_names: tuple[str, ...] = SHAPES) -> str:
    f = shape_features(mask)
    if f["area"] < 4:
        return "none"
    # a five-pointed star (an extra shape, only when asked for): as sparse as a triangle, but its mass balanced
    # between the two halves of its box (an upright triangle keeps ~1/4 in the top half, a star ~0.44)
    if "star" in shape_names and f["fill"] < 0.7 and f["top_frac"] > 0.36:
        return "star"
    # triangle: low fill and mass concentrated at the bottom
    if f["fill"] < 0.64 or (f["fill"] < 0.74 and f["top_frac"] < 0.38):
        return "triangle"
    if f["fill"] > 0.885:
        return "square"
    return "circle"


def classify(img: np.ndarray, names: tuple[str, ...] = COLOR_NAMES,
             shape_names: tuple[str, ...] = SHAPES) -> dict[str, object]:
    """img: (H, W, 3) uint8 or float in [0, 255]. Returns fg, bg, shape and the features.

    ``names``/``shape_names``: the colours and shapes to choose from (default the base vocabulary; add "star"
    to score a taught shape).
    """
    palette = _palette(names)
    a = np.asarray(img, dtype=np.float32)
    if a.max() <= 1.0 + 1e-6:
        a = a * 255.0
    a = a[..., :3]
    H, W, _ = a.shape
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]], 0)
    bg_rgb = np.median(border, 0)
    bg = nearest_color(bg_rgb, names)
    bg_ref = palette[names.index(bg)]
    dist = np.sqrt(((a - bg_rgb[None, None]) ** 2).sum(-1))
    far = dist > 0.5 * max(float(dist.max()), 1.0)
    if far.sum() < 4:
        return {"fg": "none", "bg": bg, "shape": "none", "fill": 0.0}
    fg_rgb = np.median(a[far], 0)
    fg = nearest_color(fg_rgb, names)
    if fg == bg:
        # choose the best palette colour other than the background
        d = ((palette - fg_rgb[None]) ** 2).sum(1)
        d[names.index(bg)] = np.inf
        fg = names[int(d.argmin())]
    # pixels nearer the foreground than the background (projection on the bg->fg line)
    fg_ref = fg_rgb
    v = fg_ref - bg_rgb
    t = ((a - bg_rgb[None, None]) * v[None, None]).sum(-1) / max(float((v * v).sum()), 1e-6)
    mask = _largest_component(t > 0.5)
    f = shape_features(mask)
    del bg_ref
    return {"fg": fg, "bg": bg, "shape": classify_shape(mask, shape_names), **f}


def score(imgs, targets, names: tuple[str, ...] = COLOR_NAMES,
          shape_names: tuple[str, ...] = SHAPES) -> dict[str, float]:
    """imgs: iterable of images; targets: iterable of (shape, fg, bg). Returns accuracies."""
    n = 0
    hits = {"fg": 0, "bg": 0, "shape": 0, "all": 0}
    for img, (shape, fg, bg) in zip(imgs, targets):
        c = classify(img, names, shape_names)
        ok = {"fg": c["fg"] == fg, "bg": c["bg"] == bg, "shape": c["shape"] == shape}
        for k, v in ok.items():
            hits[k] += int(v)
        hits["all"] += int(all(ok.values()))
        n += 1
    return {k: v / max(n, 1) for k, v in hits.items()}
