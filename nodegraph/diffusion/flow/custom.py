"""Custom sampling (BasicScheduler, SamplerCustomAdvanced) on flow models: what ``sigmas.model_schedule`` and
``guiders.sample_custom`` dispatch to when ``model.family != "unet"``.

- ``model_schedule``: BasicScheduler's SIGMAS on the model's flow sigmas (``int(steps / denoise)`` steps, the last
  ``steps``), so ModelSamplingFlux's shift applies as in ComfyUI.
- ``sample_custom``: the guider's conditionings through a ``FlowDenoiser`` (CFGGuider: positive/negative/cfg,
  BasicGuider: the conditioning at cfg 1), the start at sigma0 * noise + (1 - sigma0) * latent and ComfyUI's
  inverse noise scaling at the end; returns (output, denoised_output) LATENTs like the UNet path.
"""

from __future__ import annotations

from typing import Any

from .sampling import FlowDenoiser, noise_mask_for, prepare_latent
from .schedule import flow_sigmas


def model_schedule(model: Any, scheduler: str, steps: int, denoise: float) -> Any:
    """BasicScheduler's SIGMAS (float32 CPU tensor) for a flow model."""
    import torch

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0, dtype=torch.float32)
        total = int(steps / denoise)
    full = torch.as_tensor(flow_sigmas(scheduler, total, model.flow), dtype=torch.float32)
    return full[-(steps + 1):]


class FlowDualDenoiser:
    """DualCFGGuider on a flow model: cond1, cond2 and the negative each through a ``FlowDenoiser`` at cfg 1 (the
    same skips as on UNets), combined by ``guiders.dual_cfg``."""

    cfg = 1.0  # split() already gives the guided estimate, as DualDenoiser's does for CFG++ samplers

    def __init__(self, model: Any, guider: Any, *args: Any) -> None:
        from ..guiders import dual_skips

        skip_mid, skip_neg = dual_skips(guider.cfg_conds, guider.cfg_cond2_negative, guider.nested)
        self.pos = FlowDenoiser(model, list(guider.cond1), [], 1.0, *args)
        self.mid = None if skip_mid else FlowDenoiser(model, list(guider.cond2), [], 1.0, *args)
        self.neg = None if skip_neg else FlowDenoiser(model, list(guider.negative), [], 1.0, *args)
        self.scales = (float(guider.cfg_conds), float(guider.cfg_cond2_negative), bool(guider.nested))

    @property
    def noise_form(self) -> Any:
        """The flow model's noise form (the k-samplers' rectified-flow maths follow it)."""
        return self.pos.noise_form

    def split(self, x: Any, sigma: Any) -> tuple[Any, Any]:
        """(guided x0, the unconditional x0 CFG++ samplers see, or None) at noise level ``sigma``."""
        from ..guiders import dual_cfg

        pos = self.pos(x, sigma)
        mid = self.mid(x, sigma) if self.mid is not None else None
        neg = self.neg(x, sigma) if self.neg is not None and mid is not None else None
        return dual_cfg(pos, mid, neg, *self.scales)

    def __call__(self, x: Any, sigma: Any) -> Any:
        return self.split(x, sigma)[0]


def _denoiser(guider: Any, model: Any, *args: Any) -> Any:
    """The flow denoiser a guider asks for (DualCFGGuider: ``FlowDualDenoiser``)."""
    if hasattr(guider, "cond1"):
        return FlowDualDenoiser(model, guider, *args)
    positive, negative, cfg = _conditionings(guider)
    return FlowDenoiser(model, positive, negative, cfg, *args)


def guider_conditionings(guider: Any, target: str, use: str) -> tuple[list, list, float]:
    """(positive, negative, cfg) of a CFGGuider-like or BasicGuider-like GUIDER; any other raises ValueError saying it
    does not apply to ``target`` and to ``use`` another."""
    if hasattr(guider, "positive"):
        return list(guider.positive), list(guider.negative), float(guider.cfg)
    if hasattr(guider, "conditioning"):
        return list(guider.conditioning), [], 1.0
    raise ValueError(f"{type(guider).__name__} does not apply to {target}; use {use}")


def _conditionings(guider: Any) -> tuple[list, list, float]:
    return guider_conditionings(guider, "flow-matching models yet", "CFGGuider, DualCFGGuider or BasicGuider")


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustomAdvanced on a flow model: (output, denoised_output) LATENTs."""
    import torch

    from ..guiders import draw_noise
    from ..sampling import lora_applied, output_latent
    from ..preview import preview_jpeg

    model = model if model is not None else guider.model
    from ..families import CUSTOM_SAMPLERS, lookup

    own = lookup(CUSTOM_SAMPLERS, model.family)  # a family with its own loop (Wan, LTX, …): families.CUSTOM_SAMPLERS
    if own is not None:
        return own(guider, sampler, sigmas, noise, latent, devices, callback, model=model,
                   lora_library=lora_library, preview_every=preview_every)
    if not hasattr(guider, "cond1"):
        _conditionings(guider)  # an unsupported guider fails before any work
    samples = prepare_latent(model, latent)
    fmt = model.latent
    out = output_latent(latent, fmt.downscale)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = dict(out, samples=samples)
        return done, done
    start, gen = draw_noise(noise, dict(latent, samples=samples))
    last: dict[str, Any] = {}

    def unscaled(x: Any) -> Any:
        return (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()

    from ..controlnet import control_modules

    conds = [c for c in (getattr(guider, a, None) for a in ("positive", "negative", "conditioning", "cond1", "cond2"))
             if isinstance(c, list)]
    with control_modules(*conds) as controls, devices.use(model.unet, *controls), \
            lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean = ((samples - fmt.shift_factor) * fmt.scaling_factor).to(device)
        start = start.to(device)
        mask = noise_mask_for(latent, samples, device)
        denoiser = _denoiser(guider, model, dtype, device, mask, clean, start)
        s0 = float(sig[0])
        x = s0 * start + (1.0 - s0) * clean

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                show = step % preview_every == 0 or step == count
                callback(step, count, preview_jpeg(unscaled(x0), fmt) if show else None)

        if sig.numel() > 1:
            x = sampler(denoiser, x, sig.to(device), generator=gen, callback=step_done)
        s1 = float(sig[-1])
        if mask is not None:
            x = mask * x + (1.0 - mask) * (s1 * start + (1.0 - s1) * clean)
        x = x / (1.0 - s1) if s1 < 1.0 else x
        result = dict(out, samples=unscaled(x))
        denoised = dict(out, samples=unscaled(last["x0"])) if "x0" in last else result
    return result, denoised


__all__ = ["guider_conditionings", "model_schedule", "sample_custom"]
