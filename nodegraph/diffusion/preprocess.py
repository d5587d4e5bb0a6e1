"""Control-image preprocessors that need no model: Canny edges (kornia, the implementation ComfyUI's Canny uses)."""

from __future__ import annotations

from typing import Any


def canny_edges(image: Any, low_threshold: float = 0.4, high_threshold: float = 0.8) -> Any:
    """Canny edge map of an IMAGE batch [B, H, W, C] in 0..1 as a 3-channel IMAGE (1 on edges, 0 elsewhere).

    Thresholds apply to the Sobel gradient magnitude of the grayscale image in 0..1 (ComfyUI's convention).
    """
    import torch
    from kornia.filters import canny

    if not 0.0 < low_threshold <= high_threshold:
        raise ValueError(f"Canny: low_threshold ({low_threshold}) must be above 0 and at most high_threshold "
                         f"({high_threshold}); lower low_threshold or raise high_threshold")
    x = image[..., :3].float().movedim(-1, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    with torch.no_grad():
        _, edges = canny(x, low_threshold, high_threshold)
    return edges.repeat(1, 3, 1, 1).movedim(1, -1).contiguous()


__all__ = ["canny_edges"]
