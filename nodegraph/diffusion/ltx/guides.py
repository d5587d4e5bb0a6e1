"""LTXVAddGuide / LTXVCropGuides: guide images or clips for LTX-Video, as ComfyUI places them.

A guide's latent frames are appended to the video latent (after its own frames) with noise-mask value
``1 - strength`` (so at strength 1 they are kept and their tokens see timestep 0); the conditioning's
``keyframe_idxs`` [B, 3, tokens] give those tokens the positions of the frames they guide, in pixels and pixel frames
(``frame_idx`` onwards; a guide starting at frame 0, or of one frame, counts its first latent frame as one pixel
frame). The sampler puts these positions on the last tokens (``sampling.LTXDenoiser``); LTXVCropGuides removes the
appended frames after sampling.
"""

from __future__ import annotations

from typing import Any

from .sampling import SPATIAL, TEMPORAL, pixel_coords


def keyframes_of(conditioning: list) -> tuple[Any, int]:
    """(keyframe_idxs or None, number of guide latent frames) of a conditioning (the first entry that has them)."""
    import torch

    for _, extras in conditioning:
        found = extras.get("keyframe_idxs")
        if found is not None:
            return found, int(torch.unique(found[:, 0]).shape[0])
    return None, 0


def frame_index(positive: list, latent_length: int, guide_length: int, frame_idx: int) -> tuple[int, int]:
    """(pixel frame, latent frame) a guide of ``guide_length`` frames starts at; negative counts from the end."""
    _, count = keyframes_of(positive)
    frames = latent_length - count
    if frame_idx < 0:
        frame_idx = max((frames - 1) * TEMPORAL + 1 + frame_idx, 0)
    if guide_length > 1 and frame_idx != 0:
        frame_idx = (frame_idx - 1) // TEMPORAL * TEMPORAL + 1  # a clip starts on a latent frame boundary
    return frame_idx, (frame_idx + TEMPORAL - 1) // TEMPORAL


def with_keyframes(conditioning: list, frame_idx: int, guide: Any, causal_fix: bool) -> list:
    """``conditioning`` with the positions of ``guide``'s tokens [B, 128, F, h, w] appended to its keyframe_idxs."""
    import torch

    b, _, f, h, w = guide.shape
    coords = pixel_coords(b, f, h, w, causal_fix)
    coords[:, 0] += frame_idx
    existing, _ = keyframes_of(conditioning)
    coords = coords if existing is None else torch.cat([existing, coords], dim=2)
    return [(emb, dict(extras, keyframe_idxs=coords)) for emb, extras in conditioning]


def noise_mask_of(latent: dict[str, Any]) -> Any:
    """The latent's noise mask (a copy), ones [B, 1, T, 1, 1] without one."""
    import torch

    samples = latent["samples"]
    mask = latent.get("noise_mask")
    if mask is None:
        return torch.ones(samples.shape[0], 1, samples.shape[2], 1, 1)
    return mask.clone()


def crop_guides(positive: list, negative: list, latent: dict[str, Any]) -> tuple[list, list, dict[str, Any]]:
    """LTXVCropGuides: the latent without the appended guide frames and the conditionings without keyframe_idxs."""
    samples = latent["samples"].clone()
    mask = noise_mask_of(latent)
    _, count = keyframes_of(positive)
    out = dict(latent, samples=samples, noise_mask=mask)
    if count == 0:
        return positive, negative, out
    out.update(samples=samples[:, :, :-count], noise_mask=mask[:, :, :-count])
    drop = [(p, {k: v for k, v in e.items() if k != "keyframe_idxs"}) for p, e in positive]
    drop_neg = [(p, {k: v for k, v in e.items() if k != "keyframe_idxs"}) for p, e in negative]
    return drop, drop_neg, out


__all__ = ["SPATIAL", "crop_guides", "frame_index", "keyframes_of", "noise_mask_of", "with_keyframes"]
