"""Area, mask, strength and timestep-range conditioning (ComfyUI's area composition) during sampling.

A CONDITIONING entry's extras may hold "area" ((h, w, y, x) in units of 8 pixels, or ("percentage", h, w, y, x)
in fractions of the image), "mask" ([B, H, W] in 0..1) with "mask_strength" and "set_area_to_bounds",
"strength", and "start_percent"/"end_percent" (fractions of the sampling; 0 = the noisiest step). Each active entry
predicts on its area only; the predictions of one side are blended per latent cell, weighted by
mask × strength, with an 8-cell feather on area edges inside the image when there is no mask (as ComfyUI does).
Entries without any of these keep the plain strength-weighted average (``sampling._average``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FEATHER = 8  # latent cells of linear ramp on an area edge that lies inside the image (no mask)


@dataclass
class Region:
    """Where and when one conditioning entry applies: area (h, w, y, x) in latent cells, weights on that area
    ([B, 1, h, w], mask × strength × feather) and the timestep range (t_start >= t >= t_end)."""

    area: tuple[int, int, int, int]
    mult: Any
    t_start: float
    t_end: float

    def active(self, t: Any) -> bool:
        """Whether the entry applies at model timestep ``t`` (0..999, 999 = the most noise)."""
        v = float(t)
        return self.t_end <= v <= self.t_start


def _percent_to_t(p: float, at_zero: float) -> float:
    if p <= 0.0:
        return at_zero
    if p >= 1.0:
        return -at_zero
    return (1.0 - p) * 999.0


def _clamp_area(h: int, w: int, y: int, x: int, lh: int, lw: int) -> tuple[int, int, int, int]:
    y, x = min(max(y, 0), lh - 1), min(max(x, 0), lw - 1)
    return max(1, min(h, lh - y)), max(1, min(w, lw - x)), y, x


def _mask_bounds(mask: Any, lh: int, lw: int) -> tuple[int, int, int, int]:
    import torch

    nz = torch.nonzero(mask.abs().amax(dim=0) > 0)
    if nz.numel() == 0:
        return _clamp_area(8, 8, 0, 0, lh, lw)
    (y0, x0), (y1, x1) = nz.min(dim=0).values.tolist(), nz.max(dim=0).values.tolist()
    return _clamp_area(max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0, lh, lw)


def region_of(extras: dict[str, Any], latent_hw: tuple[int, int], downscale: int, batch: int, device: Any,
              what: str) -> Region | None:
    """The Region of one entry's extras on a latent of ``latent_hw`` cells; None for a plain (whole, always) entry."""
    import torch
    import torch.nn.functional as F

    keys = ("area", "mask", "start_percent", "end_percent")
    if not any(extras.get(k) is not None for k in keys):
        return None
    lh, lw = latent_hw
    strength = float(extras.get("strength", 1.0))
    area = (lh, lw, 0, 0)
    spec = extras.get("area")
    if spec is not None:
        if spec[0] == "percentage":
            ph, pw, py, px = (float(v) for v in spec[1:])
            area = _clamp_area(max(1, round(ph * lh)), max(1, round(pw * lw)), round(py * lh), round(px * lw), lh, lw)
        else:
            h, w, y, x = (int(v) * 8 // downscale for v in spec)
            area = _clamp_area(h, w, y, x, lh, lw)
    mask = extras.get("mask")
    if mask is not None:
        m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        if m.shape[-2:] != (lh, lw):
            m = F.interpolate(m, size=(lh, lw), mode="bilinear", align_corners=False)
        if batch % m.shape[0]:
            raise ValueError(f"{what}: the conditioning mask has a batch of {m.shape[0]}, which does not divide "
                             f"the latent batch of {batch}; use a single mask")
        m = m.repeat(batch // m.shape[0], 1, 1, 1)
        if extras.get("set_area_to_bounds"):
            area = _mask_bounds(m[:, 0], lh, lw)
        h, w, y, x = area
        mult = m[:, :, y:y + h, x:x + w] * float(extras.get("mask_strength", 1.0)) * strength
    else:
        h, w, y, x = area
        mult = torch.full((batch, 1, h, w), strength)
        ramp = [(i + 1) / FEATHER for i in range(min(FEATHER, h))]
        for i, r in enumerate(ramp):
            if y != 0:
                mult[:, :, i] *= r
            if y + h < lh:
                mult[:, :, h - 1 - i] *= r
        ramp = [(i + 1) / FEATHER for i in range(min(FEATHER, w))]
        for i, r in enumerate(ramp):
            if x != 0:
                mult[:, :, :, i] *= r
            if x + w < lw:
                mult[:, :, :, w - 1 - i] *= r
    start = _percent_to_t(float(extras.get("start_percent", 0.0)), float("inf"))
    end = _percent_to_t(float(extras.get("end_percent", 1.0)), float("inf"))
    return Region(area, mult.to(device), start, end)


def blend_prediction(unet: Any, x: Any, t: Any, entries: list, dtype: Any) -> Any:
    """One side's prediction: every active entry predicts on its area; blended by its weights per latent cell."""
    import torch

    from .sampling import _predict

    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    counts = torch.full(x.shape, 1e-37, dtype=torch.float32, device=x.device)
    full = (x.shape[2], x.shape[3], 0, 0)
    groups: dict[tuple[int, int, int, int], list] = {}
    for e in entries:
        if e.region is None or e.region.active(t):
            groups.setdefault(full if e.region is None else e.region.area, []).append(e)
    for (h, w, y, x0), group in groups.items():
        crop = x[:, :, y:y + h, x0:x0 + w]
        for e, pred in zip(group, _predict(unet, crop, t, group, dtype)):
            mult = e.region.mult if e.region is not None else torch.full_like(pred[:, :1], e.weight)
            out[:, :, y:y + h, x0:x0 + w] += pred * mult
            counts[:, :, y:y + h, x0:x0 + w] += mult
    return out / counts
