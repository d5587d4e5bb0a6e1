"""Sampling Stable Video Diffusion: ComfyUI's EDM v-prediction convention on the k-diffusion samplers.

SVD is sampled as ComfyUI's ``SVD_img2vid`` (V_PREDICTION_EDM, ModelSamplingContinuousEDM with sigma_min 0.002,
sigma_max 700, sigma_data 1): the MODEL's ``scheduler_config`` is ``model_sampling.continuous_config`` and the
calling convention ``model_sampling.Special("continuous")`` (UNet at 0.25·ln(sigma), input / sqrt(sigma² + 1), x0 from
the v output). KSampler computes ComfyUI's sigmas for the (sampler, scheduler) pair (``custom.k_route``) and runs
the built-in k-diffusion sampler (``ksamplers``) or a plugin's on ``SVDDenoiser``; SamplerCustomAdvanced runs the
given SAMPLER on the given SIGMAS (BasicScheduler's come from ``SVDSigmas``, the same table).

What differs from an image UNet is only the call, made here: a LATENT ``[F, 4, h, w]`` is one clip of F frames (as
ComfyUI's), the UNet sees ``[1, F, 8, h, w]``: the scaled noisy latent and the entry's ``concat_latent_image``
(resized and repeated to F frames, zeros when absent), the image embedding as encoder states and ``added_time_ids``
(fps - 1, motion_bucket_id, augmentation_level). Classifier-free guidance is per frame with VideoLinearCFGGuidance
or VideoTriangleCFGGuidance (``guidance.VideoCFG``); the other guidance patches go through ``patches.Active.guide``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import k_family
from ..flow.schedule import FlowSettings, edm_percent_to_sigma
from ..k_family import KFamily, strength_mean

SIGMA_MIN, SIGMA_MAX = 0.002, 700.0
FAMILY = "svd"
_REGION_KEYS = ("area", "mask", "start_percent", "end_percent")


@dataclass(frozen=True)
class SVDSigmas(FlowSettings):
    """ComfyUI's ModelSamplingContinuousEDM of SVD as BasicScheduler and percent_to_sigma read it: 1000 sigmas
    log-spaced in [sigma_min, sigma_max], model time 0.25·ln(sigma)."""

    kind: str = "svd"
    shift: float = 1.0
    multiplier: float = 1.0
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX

    @property
    def timesteps(self) -> int:
        """Entries of the sigma table."""
        return 1000

    def table(self) -> Any:
        """The ascending sigma table (float64 numpy)."""
        from ..model_sampling import continuous_sigmas

        return continuous_sigmas(self.sigma_min, self.sigma_max)

    def sigma(self, t: Any) -> Any:
        """The sigma at model time ``t``: exp(4 t)."""
        import numpy as np

        return np.exp(np.asarray(t, dtype=np.float64) / 0.25)

    def timestep(self, sigma: Any) -> Any:
        """The model time of ``sigma``: 0.25·ln(sigma)."""
        import numpy as np

        return 0.25 * np.log(np.asarray(sigma, dtype=np.float64))

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's ModelSamplingContinuousEDM.percent_to_sigma."""
        return edm_percent_to_sigma(percent, self.sigma_min, self.sigma_max)


def svd_model_fields() -> dict[str, Any]:
    """The DiffusionModel fields of an SVD model: its scheduler config, family and sigma settings."""
    from ..model_sampling import continuous_config

    return {"scheduler_config": continuous_config({}, "v_prediction", SIGMA_MIN, SIGMA_MAX), "family": FAMILY,
            "flow": SVDSigmas()}


def resize_to_batch(t: Any, batch: int) -> Any:
    """ComfyUI's ``resize_to_batch_size``: pick (or spread) entries of ``t`` so that it has ``batch`` of them."""
    import torch

    have = t.shape[0]
    if have == batch:
        return t
    if batch <= 1:
        return t[:batch]
    if batch < have:
        scale = (have - 1) / (batch - 1)
        index = [min(round(i * scale), have - 1) for i in range(batch)]
    else:
        scale = have / batch
        index = [min(math.floor((i + 0.5) * scale), have - 1) for i in range(batch)]
    return t[torch.tensor(index, dtype=torch.long)]


def fit_latent(image: Any, h: int, w: int) -> Any:
    """ComfyUI's ``common_upscale(…, "bilinear", "center")`` of a latent ``[N, C, h', w']`` to ``h``×``w``."""
    from ...imaging import resample

    return image if tuple(image.shape[-2:]) == (h, w) else resample(image, w, h, "bilinear", "center")


class SVDDenoiser:
    """``custom.Denoiser`` over an SVD UNet: ``denoiser(x, sigma)`` is the guided x0 of a clip ``[F, 4, h, w]``."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 frames: int, hw: tuple[int, int], mask: Any = None, clean: Any = None) -> None:
        from ..model_sampling import sigma_table, special_of
        from .guidance import guidance_of

        self.unet, self.dtype, self.device = model.unet, dtype, device
        self.frames, self.hw = int(frames), (int(hw[0]), int(hw[1]))
        self.special = special_of(model.scheduler_config)
        self.train = sigma_table(model.scheduler_config)
        self.conditioning, self.cfg = list(positive), float(cfg)
        self.mask, self.clean = mask, clean
        self.active, scale = guidance_of(model, self.cfg, self.frames, self.train)
        self.scale = None if scale is None else scale.to(device).view(-1, 1, 1, 1)
        self.conds = self.encode(positive, "positive")
        needs = self.active is not None and self.active.post
        self.unconds = [] if self.cfg == 1.0 and not needs else self.encode(negative, "negative")

    def encode(self, conditioning: list, what: str = "conditioning") -> list[tuple]:
        """Device entries (image embedding, time ids, concat latent, strength) of an SVD CONDITIONING."""
        import torch

        if not conditioning:
            raise ValueError(f"{what} is an empty conditioning list; connect SVD_img2vid_Conditioning's output")
        width = int(self.unet.config.cross_attention_dim)
        out = []
        for emb, extras in conditioning:
            if any(extras.get(k) is not None for k in _REGION_KEYS) or extras.get("control") is not None:
                raise ValueError(f"{what}: area, mask, timestep-range and ControlNet conditioning do not apply to "
                                 "Stable Video Diffusion here; remove those nodes")
            emb = emb[None] if emb.dim() == 2 else emb
            if emb.dim() != 3 or emb.shape[0] != 1 or emb.shape[-1] != width:
                raise ValueError(f"{what}: an embedding of shape {tuple(emb.shape)} is not an SVD image embedding "
                                 f"[1, N, {width}]; use SVD_img2vid_Conditioning with this checkpoint's CLIP vision")
            ids = torch.tensor([[float(extras.get("fps", 6)) - 1.0, float(extras.get("motion_bucket_id", 127)),
                                 float(extras.get("augmentation_level", 0.0))]])
            concat = extras.get("concat_latent_image")
            if concat is None:
                concat = torch.zeros(self.frames, 4, *self.hw)
            concat = resize_to_batch(fit_latent(concat.float().cpu(), *self.hw), self.frames)
            out.append((emb.to(self.device, self.dtype), ids.to(self.device, self.dtype),
                        concat.to(self.device, self.dtype), float(extras.get("strength", 1.0))))
        return out

    def _eval(self, x: Any, sigma: float, entries: list[tuple]) -> list[Any]:
        """The x0 estimate of each entry (one batched UNet call when their embeddings share a shape)."""
        import torch

        sigma = float(sigma)
        x_in = (x * self.special.c_in(sigma)).to(self.dtype)
        t = self.special.timestep(sigma, self.train)
        groups = [entries] if all(e[0].shape == entries[0][0].shape for e in entries) else [[e] for e in entries]
        outs = []
        for group in groups:
            hidden = torch.stack([torch.cat([x_in, e[2]], dim=1) for e in group])
            timestep = torch.full((len(group),), t, device=x.device, dtype=torch.float32)
            pred = self.unet(hidden, timestep, encoder_hidden_states=torch.cat([e[0] for e in group]),
                             added_time_ids=torch.cat([e[1] for e in group]), return_dict=False)[0]
            outs.extend(self.special.denoised(x, p.float(), sigma, self.train) for p in pred)
        return outs

    def _side(self, x: Any, sigma: float, entries: list[tuple]) -> Any:
        return strength_mean(self._eval(x, sigma, entries), [e[3] for e in entries])

    def _blend(self, x0: Any) -> Any:
        return x0 if self.mask is None else self.mask * x0 + (1.0 - self.mask) * self.clean

    def split(self, x: Any, sigma: float) -> tuple[Any, Any]:
        """(positive x0, negative x0 or None when cfg is 1)."""
        preds = self._eval(x, sigma, self.unconds + self.conds)
        n = len(self.unconds)
        cond = strength_mean(preds[n:], [e[3] for e in self.conds])
        return cond, (strength_mean(preds[:n], [e[3] for e in self.unconds]) if n else None)

    def __call__(self, x: Any, sigma: float) -> Any:
        cfg = self.cfg if self.scale is None else self.scale
        cond, uncond = self.split(x, sigma)
        if self.active is not None:
            from ..patches import Step

            out = self.active.guide(Step(x, float(sigma), cfg, cond, uncond,
                                         lambda xx, entries: self._side(xx, sigma, entries), self.unconds,
                                         self.encode))
        else:
            out = cond if uncond is None else uncond + cfg * (cond - uncond)
        return self._blend(out)


def prepare_latent(model: Any, latent: dict[str, Any]) -> Any:
    """The unscaled clip ``[F, 4, h, w]`` of a LATENT (a 5-D ``[1, 4, F, h, w]`` one is read as its frames)."""
    samples = latent["samples"].float()
    if samples.dim() == 5 and samples.shape[0] == 1:
        samples = samples[0].movedim(1, 0)
    channels = model.latent.channels
    if samples.dim() != 4 or samples.shape[1] != channels:
        raise ValueError(f"latent_image has shape {tuple(samples.shape)} but {model.source} samples clips "
                         f"[frames, {channels}, h, w]; connect SVD_img2vid_Conditioning's latent output")
    return samples


def _denoiser(model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any, samples: Any,
              mask: Any, clean: Any) -> SVDDenoiser:
    return SVDDenoiser(model, positive, negative, cfg, dtype, device, samples.shape[0], tuple(samples.shape[-2:]),
                       mask, clean)


def _schedule(model: Any, view: Any, scheduler: str, steps: int) -> Any:
    from ..model_sampling import sigma_table

    train = sigma_table(model.scheduler_config)
    return view.sigmas(scheduler, steps, 1.0 / (train ** 2 + 1.0))


def _sigma_max(model: Any) -> float:
    return float(model.flow.sigma_max) if model.flow is not None else SIGMA_MAX


#: The SVD side of the shared k-diffusion path (``k_family``).
SVD = KFamily("Stable Video Diffusion", prepare_latent, _schedule, _denoiser, _sigma_max)


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """``families.SAMPLERS`` entry: KSampler(Advanced) on an SVD model (ComfyUI's sigmas and step cuts)."""
    return k_family.sample(SVD, model, positive, negative, latent, opts, devices, callback, preview_every,
                           lora_library, samplers)


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """``families.CUSTOM_SAMPLERS`` entry: SamplerCustomAdvanced on an SVD model: (output, denoised_output)."""
    return k_family.sample_custom(SVD, guider, sampler, sigmas, noise, latent, devices, callback, model=model,
                                  lora_library=lora_library, preview_every=preview_every)


__all__ = ["FAMILY", "SIGMA_MAX", "SIGMA_MIN", "SVD", "SVDDenoiser", "SVDSigmas", "fit_latent", "prepare_latent",
           "resize_to_batch", "sample", "sample_custom", "svd_model_fields"]
