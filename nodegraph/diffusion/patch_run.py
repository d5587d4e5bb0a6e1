"""The diffusers sampling loop's side of a MODEL's sampling patches (``patches``): each step's prediction guided in
k-diffusion form and the per-step inpainting mask; and the encoder patches use for extra prompts."""

from __future__ import annotations

import math
from typing import Any, Callable

from . import patches
from .sampling import _conds, _sigma_k, _sigma_vp, side_predictions
from .types import DiffusionModel


def encoder(model: DiffusionModel, samples: Any, device: Any, dtype: Any) -> Callable[[list], list]:
    """CONDITIONING -> device entries for the latent batch ``samples`` (what a patch's extra prompt needs)."""
    batch, _, h, w = samples.shape
    pixel_hw = (h * model.latent.downscale, w * model.latent.downscale)
    return lambda conditioning: _conds(model, list(conditioning), batch, pixel_hw, device, dtype,
                                       "empty_conditioning")


def attach(denoiser: Any, active: Any, model: DiffusionModel, samples: Any, sigmas: Any, device: Any,
           dtype: Any) -> None:
    """Give a k-diffusion denoiser the MODEL's active patches for a run over ``sigmas`` (nothing without patches)."""
    if active is None:
        return
    active.begin(float(sigmas[0]), float(sigmas[-1]))
    denoiser.active, denoiser.encode = active, encoder(model, samples, device, dtype)


class PatchedRun:
    """The diffusers loop's view of a MODEL's sampling patches: each step's prediction guided by
    ``patches.Active.guide`` in k-diffusion form (the scheduler's input is x_k / sqrt(sigma² + 1) in both its
    parametrisations), and the per-step inpainting mask."""

    def __init__(self, model: DiffusionModel, active: Any, scheduler: Any, space: str, timesteps: Any, i0: int,
                 i1: int, encode: Callable[[list], list]) -> None:
        self.model, self.active, self.encode = model, active, encode
        self.scheduler, self.space = scheduler, space
        self.sigmas = [patches_sigma(active.table, float(t)) for t in timesteps]
        last = self.sigmas[i1] if i1 < len(self.sigmas) else 0.0
        active.begin(self.sigmas[i0], last)

    def prediction(self, model_in: Any, t: Any, i: int, conds: list, unconds: list, cfg: float, dtype: Any) -> Any:
        """The scheduler's model output at step ``i``, guided with the patches."""
        sigma = _sigma_k(self.scheduler, t) if self.space == "k" else _sigma_vp(self.scheduler, t)
        kind = self.model.prediction_type
        unet = self.model.unet
        x = model_in * math.sqrt(sigma * sigma + 1.0)

        def denoise(xk: Any, entries: list) -> Any:
            out, _ = side_predictions(unet, xk / math.sqrt(sigma * sigma + 1.0), t, entries, [], dtype)
            return patches.to_x0(xk, out, sigma, kind)

        self.active.before_eval()
        cond, uncond = side_predictions(unet, model_in, t, conds, unconds, dtype)
        step = patches.Step(x, sigma, cfg, patches.to_x0(x, cond, sigma, kind),
                            None if uncond is None else patches.to_x0(x, uncond, sigma, kind), denoise, unconds,
                            self.encode)
        return patches.from_x0(x, self.active.guide(step), sigma, kind)

    def mask(self, mask: Any, i: int) -> Any:
        """The inpainting mask after step ``i``."""
        return self.active.mask(mask, self.sigmas[i])


def patches_sigma(table: Any, t: float) -> float:
    """sigma at (fractional) training timestep ``t`` of the model's sigma ``table``."""
    from .schedulers import t_to_sigma

    return float(t_to_sigma(t, table))
