"""KSampler and SamplerCustomAdvanced for UNet-like families sampled on the k-diffusion samplers (SVD, Stable Cascade).

Such a family brings a ``KFamily``: how it reads its LATENT, computes KSampler's sigmas, builds its denoiser
(``custom.Denoiser``: ``denoiser(x, sigma)`` is the guided x0) and knows its largest sigma. The loop here is
ComfyUI's: scale the latent in, noise it (sqrt(1 + sigma²) from the model's largest sigma on a full denoise), run
the sampler with previews, keep the unmasked part clean, scale out; ``sample`` adds KSampler(Advanced)'s step cuts
and ``sample_custom`` SamplerCustomAdvanced's (output, denoised_output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class KFamily:
    """What a UNet-like family gives the shared k-diffusion path."""

    #: The family's name in error messages ("Stable Video Diffusion").
    label: str
    #: ``prepare(model, latent)``: the unscaled samples of a LATENT, checked against the model.
    prepare: Callable[[Any, dict[str, Any]], Any]
    #: ``schedule(model, view, scheduler, steps)``: KSampler's full sigmas (steps + 1, float64 numpy).
    schedule: Callable[[Any, Any, str, int], Any]
    #: ``denoiser(model, positive, negative, cfg, dtype, device, samples, mask, clean)``: the family's denoiser.
    denoiser: Callable[..., Any]
    #: ``sigma_max(model)``: the model's largest sigma (where a full denoise starts).
    sigma_max: Callable[[Any], float]


def strength_mean(preds: list, strengths: list[float]) -> Any:
    """The conditioning entries' x0 estimates averaged by their strengths (the one estimate itself when alone)."""
    if len(preds) == 1:
        return preds[0]
    total = sum(strengths) or 1.0
    return sum(p * w for p, w in zip(preds, strengths)) / total


def run(family: KFamily, model: Any, positive: list, negative: list, cfg: float, samples: Any, noise: Any,
        sigmas: Any, fn: Any, gen: Any, latent: dict[str, Any], devices: Any, callback: Any = None,
        preview_every: int = 4, lora_library: Any = None) -> tuple[Any, Any]:
    """Sample ``samples`` from ``noise`` over ``sigmas`` with sampler ``fn``: (unscaled result, last x0)."""
    import torch

    from .flow.sampling import noise_mask_for
    from .preview import preview_jpeg
    from .sampling import lora_applied

    fmt = model.latent
    last: dict[str, Any] = {}

    def unscaled(x: Any) -> Any:
        return (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()

    with devices.use(model.unet), lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean = ((samples - fmt.shift_factor) * fmt.scaling_factor).to(device)
        noise = noise.to(device)
        mask = noise_mask_for(latent, samples, device)
        denoiser = family.denoiser(model, positive, negative, cfg, dtype, device, samples, mask, clean)
        s0 = float(sigmas[0])
        top = family.sigma_max(model)
        # ComfyUI's noise scaling: sqrt(1 + sigma²) from the model's largest sigma (full denoise)
        start = math.sqrt(1.0 + s0 * s0) if math.isclose(top, s0, rel_tol=1e-5) or s0 > top else s0
        x = clean + noise * start

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                show = step % preview_every == 0 or step == count
                callback(step, count, preview_jpeg(unscaled(x0), fmt) if show else None)

        if len(sigmas) > 1:
            x = fn(denoiser, x, torch.as_tensor(sigmas, dtype=torch.float32).to(device), generator=gen,
                   callback=step_done)
        if mask is not None:
            x = mask * x + (1.0 - mask) * (clean + noise * float(sigmas[-1]))
        return unscaled(x), (unscaled(last["x0"]) if "x0" in last else None)


def sample(family: KFamily, model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any,
           devices: Any, callback: Any = None, preview_every: int = 4, lora_library: Any = None,
           samplers: Any = None) -> dict:
    """KSampler(Advanced) on a ``family`` model: ComfyUI's sigmas and step cuts, then ``run``."""
    import numpy as np

    from .custom import k_route
    from .noise import start_noise
    from .sampling import output_latent

    samples = family.prepare(model, latent)
    out = output_latent(latent, model.latent.downscale)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return dict(out, samples=samples)
    view = k_route(samplers, opts.sampler_name, opts.scheduler, force=True)
    if view is None or opts.sampler_name not in view.samplers:
        raise ValueError(f"unknown sampler {opts.sampler_name!r} for {family.label}")
    full = family.schedule(model, view, opts.scheduler, total)
    keep_noise = s1 < total and opts.return_with_leftover_noise
    sig = full[s0:s1 + 1] if s1 >= total or keep_noise else np.append(full[s0:s1], 0.0)
    gen, noise = start_noise(opts, samples, latent)
    result, _ = run(family, model, positive, negative, opts.cfg, samples, noise, sig,
                    view.samplers[opts.sampler_name].fn, gen, latent, devices, callback, preview_every, lora_library)
    return dict(out, samples=result)


def sample_custom(family: KFamily, guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any],
                  devices: Any, callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustomAdvanced on a ``family`` model: (output, denoised_output)."""
    import torch

    from .flow.custom import guider_conditionings
    from .guiders import draw_noise
    from .sampling import output_latent

    model = model if model is not None else guider.model
    positive, negative, cfg = guider_conditionings(guider, family.label, "CFGGuider or BasicGuider")
    samples = family.prepare(model, latent)
    out = output_latent(latent, model.latent.downscale)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = dict(out, samples=samples)
        return done, done
    start, gen = draw_noise(noise, dict(latent, samples=samples))
    result, x0 = run(family, model, positive, negative, cfg, samples, start, sig.numpy().astype("float64"), sampler,
                     gen, latent, devices, callback, preview_every, lora_library)
    done = dict(out, samples=result)
    return done, (dict(out, samples=x0) if x0 is not None else done)


__all__ = ["KFamily", "run", "sample", "sample_custom", "strength_mean"]
