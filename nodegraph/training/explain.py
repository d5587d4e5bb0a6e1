"""Diffusion made visible: forward noising under a model's schedule, the schedule's curves, denoising trajectories.

All in the model's own terms: its diffusers scheduler config (betas, prediction type, spacing) gives the
``alphas_cumprod`` of forward noising ``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε``, the sigmas ``sqrt((1-ᾱ)/ᾱ)``
and the signal-to-noise ratio ``ᾱ/(1-ᾱ)``; a sampler's schedule comes from the same table KSampler uses
(``nodegraph.diffusion.schedulers.build_scheduler``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np


def _config(scheduler_config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}


def alphas_cumprod(scheduler_config: Mapping[str, Any]) -> Any:
    """ᾱ_t for t = 0 … T-1 of the model's training schedule (a float32 tensor)."""
    import diffusers

    cfg = _config(scheduler_config)
    if "FlowMatch" in str(scheduler_config.get("_class_name", "")):
        raise ValueError("flow-matching models have no alphas_cumprod; forward noising and schedule plots need a "
                         "UNet model with an epsilon/v objective")
    return diffusers.DDPMScheduler.from_config(cfg).alphas_cumprod.float()


def forward_noise(clean: Any, noise: Any, timesteps: list[int], scheduler_config: Mapping[str, Any]) -> Any:
    """``clean`` [B, …] noised to each timestep (the scheduler's ``add_noise``): [len(timesteps)·B, …], t-major."""
    import diffusers
    import torch

    sched = diffusers.DDPMScheduler.from_config(_config(scheduler_config))
    n = len(sched.alphas_cumprod)
    bad = [t for t in timesteps if not 0 <= t < n]
    if bad:
        raise ValueError(f"timesteps {bad} are outside 0…{n - 1} (this model was trained with {n} steps)")
    out = [sched.add_noise(clean, noise, torch.full((clean.shape[0],), int(t), dtype=torch.long))
           for t in timesteps]
    return torch.cat(out)


def parse_timesteps(text: str) -> list[int]:
    """"0, 250, 500" or "0-999/5" (five evenly spaced from 0 to 999) → a list of integer timesteps."""
    text = text.strip()
    if "/" in text and "-" in text:
        span, _, count = text.partition("/")
        lo, _, hi = span.partition("-")
        k = int(count)
        if k < 1:
            raise ValueError("the count after '/' must be at least 1")
        return [int(round(v)) for v in np.linspace(int(lo), int(hi), k)]
    try:
        values = [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"timesteps {text!r}: write integers separated by commas ('0, 250, 500') or a range "
                         "with a count ('0-999/5')") from exc
    if not values:
        raise ValueError("timesteps is empty: give at least one, e.g. '0, 250, 500, 750, 999'")
    return values


def schedule_curves(scheduler_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per training timestep: alphas_cumprod, sigmas (sqrt((1-ᾱ)/ᾱ)) and snr (ᾱ/(1-ᾱ))."""
    a = alphas_cumprod(scheduler_config).double().numpy()
    return {"alphas_cumprod": a, "sigmas": np.sqrt((1 - a) / a), "snr": a / (1 - a)}


def sampling_sigmas(sampler: str, scheduler: str, scheduler_config: Mapping[str, Any], steps: int) -> np.ndarray:
    """The sigmas a sampler visits for (sampler, scheduler, steps) on this model, last one 0."""
    from nodegraph.diffusion.schedulers import build_scheduler

    sched = build_scheduler(sampler, scheduler, scheduler_config, steps)
    sig = getattr(sched, "sigmas", None)
    if sig is not None:
        return np.asarray(sig, dtype=np.float64)
    a = sched.alphas_cumprod.double().numpy()
    ts = np.asarray(sched.timesteps, dtype=np.float64)
    table = np.sqrt((1 - a) / a)
    return np.append(np.interp(ts, np.arange(len(table)), table), 0.0)


@dataclass
class Trajectory:
    """What a sampler went through: the latent after each step (variance-preserving scale) and each x0 guess."""

    latents: list[Any] = field(default_factory=list)
    x0: list[Any] = field(default_factory=list)
    timesteps: list[float] = field(default_factory=list)


def denoise_trajectory(unet: Any, scheduler_config: Mapping[str, Any], prediction_type: str, cond: Any,
                       uncond: Any | None, noise: Any, sampler: str, scheduler: str, steps: int, cfg: float,
                       seed: int = 0, on_step: Callable[[int, int], None] | None = None) -> Trajectory:
    """Sample from ``noise`` (scaled latent space) recording every step; ``cond``/``uncond`` are [1, T, D]."""
    import inspect

    import torch

    from nodegraph.diffusion.sampling import predict_x0
    from nodegraph.diffusion.schedulers import SAMPLERS, build_scheduler

    if getattr(unet.config, "addition_embed_type", None):
        raise ValueError("DenoiseTrajectory supports SD1/SD2-style UNets (text conditioning only), not SDXL")
    space = SAMPLERS[sampler].space
    sched = build_scheduler(sampler, scheduler, scheduler_config, steps, seed)
    gen = torch.Generator("cpu").manual_seed(int(seed))
    step_kw = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    x = noise * sched.init_noise_sigma
    out = Trajectory()
    batch = x.shape[0]
    c = cond.expand(batch, -1, -1)
    use_cfg = uncond is not None and cfg != 1.0
    embs = torch.cat([uncond.expand(batch, -1, -1), c]) if uncond is not None and use_cfg else c
    timesteps = list(sched.timesteps)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            xin = sched.scale_model_input(x, t)
            pred = unet(torch.cat([xin, xin]) if use_cfg else xin, t, encoder_hidden_states=embs).sample.float()
            if use_cfg:
                u, p = pred.chunk(2)
                pred = u + cfg * (p - u)
            x0 = predict_x0(sched, space, x, pred, t, prediction_type)
            x = sched.step(pred, t, x, **step_kw).prev_sample
            sigma = _sigma_after(sched, space, timesteps, i)
            out.latents.append((x / math.sqrt(1 + sigma * sigma)) if space == "k" else x.clone())
            out.x0.append(x0)
            out.timesteps.append(float(t))
            if on_step is not None:
                on_step(i + 1, len(timesteps))
    return out


def _sigma_after(sched: Any, space: str, timesteps: list[Any], i: int) -> float:
    if space != "k":
        return 0.0
    sig = getattr(sched, "sigmas", None)
    return float(sig[i + 1]) if sig is not None and i + 1 < len(sig) else 0.0
