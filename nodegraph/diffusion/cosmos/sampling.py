"""Cosmos Predict2 under the shared flow sampling loop, with ComfyUI's EDM-style noise levels.

ComfyUI samples Cosmos Predict2 (``ModelSamplingCosmosRFlow`` + ``COSMOS_RFLOW``) on EDM sigmas (0.002 … 80,
log-spaced table): x = x0 + sigma * noise, the model sees x / (1 + sigma) at time t = sigma / (1 + sigma) and
predicts the velocity v; x0 = x (1 - t) - v t. That is a rectified flow in t: x / (1 + sigma) = (1 - t) x0 + t noise.
So KSampler/BasicScheduler compute ComfyUI's EDM sigmas on ``CosmosFlow``'s table (every scheduler as ComfyUI does
it), and the run maps them to t and goes through the shared loop (``flow.custom.sample_custom``) on the model's
rectified-flow view (family ``cosmos_rf``, denoiser ``CosmosDenoiser``). The loop's start t·noise + (1 - t)·x0 and
its end x / (1 - t) are exactly ComfyUI's EDM start and (identity) inverse noise scaling. Euler steps are the same
in either variable; other samplers step in t (ComfyUI's step in sigma), which is the one difference.

Video latents ``[B, 16, T, h, w]`` hold raw Wan 2.1 values (as the video nodes make them): they are normalised
around the loop. Video2world's noise mask (CosmosPredict2ImageToVideoLatent) rides in the conditioning (``FRAMES``)
rather than the loop's image mask: the given frames enter the model clean at time 0 (ComfyUI's process_timestep and
scale_latent_inpaint), the condition-mask channel is 1 on them, and their estimate is the given latent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..auraflow.sampling import text_entries
from ..flow.sampling import FlowDenoiser, _batch
from ..flow.schedule import FlowSettings, edm_percent_to_sigma

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: The family name of a Cosmos model's rectified-flow view (what the shared loop samples).
RF_FAMILY = "cosmos_rf"
#: Conditioning extras key carrying video2world's (mask, clean latent) to the denoiser.
FRAMES = "cosmos_frames"


@dataclass(frozen=True)
class CosmosFlow(FlowSettings):
    """ComfyUI's ModelSamplingCosmosRFlow: EDM sigmas in [sigma_min, sigma_max], timestep sigma / (sigma + 1)."""

    kind: str = "cosmos"
    shift: float = 1.0
    multiplier: float = 1.0
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX

    @property
    def timesteps(self) -> int:
        """Entries of the sigma table."""
        return 1000

    def table(self) -> Any:
        """The ascending EDM sigma table (float32 as ComfyUI stores it, returned as float64 numpy)."""
        import numpy as np
        import torch

        t = torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.timesteps).exp()
        return t.numpy().astype(np.float64)

    def _edges(self) -> tuple[float, float]:
        table = self.table()
        return float(table[0]), float(table[-1])

    def sigma(self, t: Any) -> Any:
        """EDM sigma at model time ``t`` (t / (1 - t), sigma_max from sigma_max / (sigma_max + 1) on)."""
        import numpy as np

        t = np.asarray(t, dtype=np.float64)
        smax = self._edges()[1]
        with np.errstate(divide="ignore"):
            return np.where(t >= smax / (smax + 1), smax, t / (1 - t))

    def timestep(self, sigma: Any) -> Any:
        """Model time of EDM sigma: sigma / (sigma + 1)."""
        import numpy as np

        sigma = np.asarray(sigma, dtype=np.float64)
        return sigma / (sigma + 1)

    def percent_to_sigma(self, percent: float) -> float:
        """The EDM sigma at ``percent`` of the way through sampling (ComfyUI's ModelSamplingContinuousEDM)."""
        return edm_percent_to_sigma(percent, *self._edges())


def to_t(sigmas: Any) -> Any:
    """EDM sigmas → rectified-flow times t = sigma / (1 + sigma) (float32 CPU tensor)."""
    import torch

    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
    return (s / (1.0 + s)).float()


def rf_view(model: Any) -> Any:
    """The model as the shared flow loop samples it: family ``cosmos_rf``, sigmas in t."""
    return replace(model, family=RF_FAMILY)


class CosmosDenoiser(FlowDenoiser):
    """``denoiser(x, t)``: the guided x0 estimate of a Cosmos Predict2 transformer at rectified-flow time ``t``."""

    @property
    def noise_form(self) -> Any:
        """Rectified flow in t = sigma / (1 + sigma): the EDM percent_to_sigma mapped into the loop's time."""
        from ..ksamplers.forms import RectifiedFlow

        edm = self.flow.percent_to_sigma
        return RectifiedFlow(lambda p: (lambda s: s / (1.0 + s))(edm(p)))

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        width = int(self.transformer.config.text_embed_dim)
        entries = text_entries(conditioning, what, width, "Cosmos Predict2", "CLIPLoader type cosmos (old T5-XXL)",
                               self.device, self.dtype)
        #: video2world: (denoise mask [B, 1, T, h, w], normalised clean latent) set by ``video.frames_run``
        self.frames = next((tuple(t.to(self.device) for t in extras[FRAMES]) for _, extras in conditioning
                            if extras.get(FRAMES) is not None), None)
        return [(emb, None, None, (), strength, None, None) for emb, strength in entries]

    def _inpaint_in(self, x: Any, sigma: float) -> Any:
        """Given frames enter the model clean (ComfyUI's Cosmos scale_latent_inpaint, no noise augmentation)."""
        if getattr(self, "frames", None) is None:
            return super()._inpaint_in(x, sigma)
        mask, clean = self.frames
        return x * mask + clean * (1.0 - mask)

    def _inpaint_out(self, x0: Any) -> Any:
        """Given frames' estimate is the given latent (ComfyUI's KSamplerX0Inpaint)."""
        if getattr(self, "frames", None) is None:
            return super()._inpaint_out(x0)
        mask, clean = self.frames
        return x0 * mask + clean * (1.0 - mask)

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch
        import torch.nn.functional as F

        hidden = x if x.dim() == 5 else x[:, :, None]
        b, c, frames, h, w = hidden.shape
        extra = int(self.transformer.config.in_channels) - c
        if extra not in (1, 2):
            raise ValueError(f"this Cosmos transformer takes {int(self.transformer.config.in_channels)} input "
                             f"channels, not the latent's {c} + 1 or 2; use a 16-channel Wan 2.1 latent")
        mask = None if getattr(self, "frames", None) is None else self.frames[0]
        t = torch.full((b,), float(sigma), device=x.device, dtype=torch.float32)
        if mask is not None:  # ComfyUI's process_timestep: given frames are at time 0
            t = (t.view(b, 1, 1, 1, 1) * mask.mean(dim=(1, 3, 4), keepdim=True)).expand(b, 1, frames, 1, 1)
        parts = [hidden]
        if extra == 2:  # video2world: the condition mask, 1 on given frames (ComfyUI's mask_inverted)
            parts.append(hidden.new_zeros(b, 1, frames, h, w) if mask is None else (1.0 - mask).expand(b, -1, -1, -1,
                                                                                                         -1))
        hidden = torch.cat(parts, dim=1)
        if h % 2 or w % 2:  # 1×2×2 patches: pad circularly as ComfyUI does
            hidden = F.pad(hidden, (0, w % 2, 0, h % 2, 0, 0), mode="circular")
        # the padding-mask channel: all zeros, as ComfyUI and the diffusers pipelines pass it
        hidden = torch.cat([hidden, hidden.new_zeros(b, 1, *hidden.shape[2:])], dim=1)
        out = self.transformer(hidden_states=hidden.to(self.dtype), timestep=t.to(self.dtype),
                               encoder_hidden_states=_batch(entry[0], b), return_dict=False)[0]
        out = out[..., :h, :w].float()
        return out if x.dim() == 5 else out[:, :, 0]


@dataclass(frozen=True)
class _SeedNoise:
    """KSampler's noise as a NOISE value: the seed's Gaussian noise, or zeros (add_noise off) with the seed's
    generator still driving the sampler's step noise."""

    seed: int
    add: bool = True

    def generate_noise(self, latent: dict[str, Any], generator: Any = None) -> Any:
        """The starting noise for ``latent``."""
        import torch

        from ..guiders import RandomNoise

        if not self.add:
            return torch.zeros_like(latent["samples"], dtype=torch.float32)
        return RandomNoise(self.seed).generate_noise(latent, generator)


def _frames(latent: dict[str, Any], norm: Any) -> Any:
    """(denoise mask [B, 1, T, h, w], normalised latent) of a video latent with a noise mask, else None."""
    import torch.nn.functional as F

    mask = latent.get("noise_mask")
    if mask is None:
        return None
    m = mask.float()
    if m.dim() != 5:
        raise ValueError(f"noise_mask {tuple(m.shape)} is not a video mask [B, 1, T, h, w] for the video latent "
                         f"{tuple(norm.shape)}; use CosmosPredict2ImageToVideoLatent")
    m = m.mean(dim=1, keepdim=True)
    if m.shape[2:] != norm.shape[2:]:
        m = F.interpolate(m, size=tuple(norm.shape[2:]), mode="trilinear", align_corners=False)
    if m.shape[0] != norm.shape[0]:
        m = m.repeat(norm.shape[0] // m.shape[0] if norm.shape[0] % m.shape[0] == 0 else 1, 1, 1, 1, 1)
    return m.clamp(0.0, 1.0), norm


def _progress_only(sampler: Any, callback: Any) -> Any:
    """``sampler`` reporting progress to ``callback`` without previews (the image previews take 4-D latents)."""

    def run(denoiser: Any, x: Any, sigmas: Any, *, generator: Any = None, callback: Any = None) -> Any:
        def step_done(step: int, count: int, x0: Any) -> None:
            if callback is not None:
                callback(step, count, x0)  # the loop's own bookkeeping (denoised output)
            if outer is not None:
                outer(step, count, None)

        return sampler(denoiser, x, sigmas, generator=generator, callback=step_done)

    outer = callback
    return run


def _run(model: Any, positive: list, negative: list, cfg: float, sampler: Any, sigmas: Any, noise: Any,
         latent: dict[str, Any], devices: Any, callback: Any, lora_library: Any,
         preview_every: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shared loop on the rectified-flow view, with EDM ``sigmas``. Video latents (raw Wan 2.1 values) are
    normalised around it, and a video noise mask (video2world's given frames) rides in the conditioning instead."""
    from ..flow import custom
    from ..guiders import CFGGuider

    view = rf_view(model)
    samples = latent["samples"]
    if samples.dim() != 5:
        return custom.sample_custom(CFGGuider(view, list(positive), list(negative), cfg), sampler, to_t(sigmas),
                                    noise, latent, devices, callback, model=view, lora_library=lora_library,
                                    preview_every=preview_every)
    from ..video_models.wan_vae import latent_stats

    mean, std = latent_stats(samples.shape[1])
    norm = (samples.float() - mean) / std
    frames = _frames(latent, norm)
    if frames is not None:
        positive = [(emb, dict(extras, **{FRAMES: frames})) for emb, extras in positive]
        negative = [(emb, dict(extras, **{FRAMES: frames})) for emb, extras in negative]
    run = {k: v for k, v in latent.items() if k != "noise_mask"}
    out, denoised = custom.sample_custom(CFGGuider(view, list(positive), list(negative), cfg),
                                         _progress_only(sampler, callback), to_t(sigmas), noise,
                                         dict(run, samples=norm), devices, None, model=view,
                                         lora_library=lora_library, preview_every=preview_every)
    keep = {"noise_mask": latent["noise_mask"]} if "noise_mask" in latent else {}
    return (dict(out, samples=out["samples"] * std + mean, **keep),
            dict(denoised, samples=denoised["samples"] * std + mean, **keep))


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """``families.SAMPLERS`` entry: KSampler on Cosmos Predict2 (ComfyUI's EDM sigmas, run in t by the shared loop)."""
    from ..flow.sampling import sampler_fn, sigmas_for
    from ..guiders import RandomNoise

    noise = RandomNoise(int(opts.seed)) if opts.add_noise else _SeedNoise(int(opts.seed), False)
    return _run(model, positive, negative, float(opts.cfg), sampler_fn(opts.sampler_name, samplers),
                sigmas_for(model, opts), noise, latent, devices, callback, lora_library, preview_every)[0]


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """``families.CUSTOM_SAMPLERS`` entry: SamplerCustomAdvanced on Cosmos Predict2 with EDM SIGMAS."""
    from ..flow.custom import _conditionings

    positive, negative, cfg = _conditionings(guider)
    return _run(model if model is not None else guider.model, positive, negative, cfg, sampler, sigmas, noise,
                latent, devices, callback, lora_library, preview_every)


__all__ = [
    "FRAMES",
    "RF_FAMILY",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "CosmosDenoiser",
    "CosmosFlow",
    "rf_view",
    "sample",
    "sample_custom",
    "to_t",
]
