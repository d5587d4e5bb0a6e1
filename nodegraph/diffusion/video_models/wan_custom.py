"""Custom sampling (SamplerCustomAdvanced with CFGGuider/BasicGuider, BasicScheduler) on a Wan model: what
``flow.custom.sample_custom`` dispatches to for ``family == "wan"``.

As ``flow.custom`` for Flux, on video latents: the start is sigma0 · noise + (1 - sigma0) · latent in the model's
normalised space, the guider's conditionings go through a ``WanDenoiser``, and the result is scaled back by
ComfyUI's inverse noise scaling; returns the (output, denoised_output) LATENTs.
"""

from __future__ import annotations

from typing import Any

from .wan_sampling import WanDenoiser, prepare_video_latent


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustomAdvanced on a Wan model: (output, denoised_output) video LATENTs."""
    import torch

    from ..flow.custom import _conditionings
    from ..guiders import draw_noise
    from ..sampling import lora_applied, output_latent
    from ..preview import preview_jpeg
    from .wan22 import denoise_mask
    from .wan_vae import latent_stats

    model = model if model is not None else guider.model
    positive, negative, cfg = _conditionings(guider)
    samples = prepare_video_latent(model, latent)
    mask = denoise_mask(model, latent, samples)
    out = output_latent(latent, model.latent.downscale)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = dict(out, samples=samples)
        return done, done
    start, gen = draw_noise(noise, dict(latent, samples=samples))
    mean, std = latent_stats(samples.shape[1])
    last: dict[str, Any] = {}
    with devices.use(model.unet), lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        mean, std = mean.to(device), std.to(device)
        clean = (samples.to(device) - mean) / std
        start = start.to(device)
        mask = None if mask is None else mask.to(device)
        denoiser = WanDenoiser(model, positive, negative, cfg, dtype, device, mask=mask, clean=clean)
        s0 = float(sig[0])
        x = s0 * start + (1.0 - s0) * clean

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                show = step % preview_every == 0 or step == count
                frame = (x0[:, :, 0] * std[:, :, 0] + mean[:, :, 0]).float().cpu()
                callback(step, count, preview_jpeg(frame, model.latent) if show else None)

        if sig.numel() > 1:
            x = sampler(denoiser, x, sig.to(device), generator=gen, callback=step_done)
        s1 = float(sig[-1])
        x = x / (1.0 - s1) if s1 < 1.0 else x
        result = dict(out, samples=(x.float() * std + mean).cpu())
        denoised = dict(out, samples=(last["x0"].float() * std + mean).cpu()) if "x0" in last else result
    return result, denoised


__all__ = ["sample_custom"]
