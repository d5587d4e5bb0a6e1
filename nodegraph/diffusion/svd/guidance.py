"""VideoLinearCFGGuidance / VideoTriangleCFGGuidance: classifier-free guidance whose scale changes along the clip.

ComfyUI sets them as the model's cfg function (``set_model_sampler_cfg_function``): the last cfg function recorded
on a MODEL (these, RescaleCFG, PerpNeg) replaces plain guidance. Per frame f of F the scale is
- linear: ``linspace(min_cfg, cfg, F)[f]`` (the first frame at min_cfg, the last at cfg);
- triangle: ``min_cfg + (cfg - min_cfg) · 2|v - floor(v + 0.5)|`` with ``v = linspace(0, 1, F)[f]`` (min_cfg at
  both ends, cfg mid-clip).
The patch is recorded on the MODEL like ``patches``' (weights shared) and applied by ``sampling.SVDDenoiser``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SHAPES = ("linear", "triangle")


@dataclass(frozen=True)
class VideoCFG:
    """Per-frame classifier-free guidance: ``shape`` "linear" or "triangle", from ``min_cfg`` to the sampler's cfg."""

    min_cfg: float
    shape: str = "linear"

    def scales(self, cfg: float, frames: int) -> Any:
        """The guidance scale of each of ``frames`` frames (float32 tensor [frames])."""
        import torch

        if self.shape == "linear":
            return torch.linspace(self.min_cfg, cfg, frames)
        values = torch.linspace(0, 1, frames)
        values = 2 * (values - torch.floor(values + 0.5)).abs()
        return values * (cfg - self.min_cfg) + self.min_cfg


def with_video_cfg(model: Any, min_cfg: float, shape: str = "linear") -> Any:
    """A copy of the MODEL (handle or DiffusionModel, weights shared) with per-frame guidance recorded."""
    from ...models.handles import derive
    from ..patches import patches_of

    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r} is not one of {', '.join(SHAPES)}")
    return derive(model, patches=patches_of(model) + (VideoCFG(float(min_cfg), shape),))


#: Patches that change the UNet's forward pass, which SVD's spatio-temporal UNet does not take here.
_UNET_PATCHES = ("FreeU", "TokenMerging", "Hypernetwork", "SelfAttentionGuidance")


def guidance_of(model: Any, cfg: float, frames: int, table: Any) -> tuple[Any, Any]:
    """(``patches.Active`` for the MODEL's guidance patches or None, per-frame scales [frames] or None) of one run."""
    from ..patches import Active, PerpNeg, RescaleCFG, patches_of

    patches = patches_of(model)
    for patch in patches:
        if type(patch).__name__ in _UNET_PATCHES:
            raise ValueError(f"{type(patch).__name__} does not apply to Stable Video Diffusion's spatio-temporal UNet "
                             "here; remove that node")
    cfg_fns = [p for p in patches if isinstance(p, (RescaleCFG, PerpNeg, VideoCFG))]
    video = cfg_fns[-1] if cfg_fns and isinstance(cfg_fns[-1], VideoCFG) else None
    scale = None if video is None else video.scales(cfg, frames)
    kept = tuple(p for p in patches if not isinstance(p, VideoCFG)
                 and not (video is not None and isinstance(p, (RescaleCFG, PerpNeg))))
    return (Active(kept, table) if kept else None), scale


__all__ = ["SHAPES", "VideoCFG", "guidance_of", "with_video_cfg"]
