"""The denoising loop on a diffusers scheduler and UNet, with ComfyUI's KSampler semantics.

- Schedule: ``steps`` steps of the (sampler, scheduler) pair (see ``schedulers``); with ``denoise`` < 1 the schedule
  has ``int(steps / denoise)`` steps and the last ``steps`` run, starting part-way as diffusers' img2img pipeline
  does (``set_begin_index`` + ``add_noise`` at the first timestep). ``start_at_step``/``end_at_step`` cut that range
  (KSamplerAdvanced); stopping early either returns the leftover noise or finishes with the model's x0 estimate.
- LATENT samples are unscaled; they are scaled by the model's ``LatentFormat`` going in and out. A latent with
  leftover noise is x0 + sigma * noise (ComfyUI's convention) whatever the scheduler's own parametrisation.
- Guidance: classifier-free, uncond + cfg * (cond - uncond), every conditioning entry in one UNet call when their
  shapes allow; several entries on one side are averaged, weighted by their "strength". cfg == 1 skips uncond.
  Entries with an area, mask or timestep range are composed per latent cell instead (``regions``).
- ControlNets/T2I-Adapters attached to an entry ("control" extra) add their residuals to that entry's UNet calls
  within their step range (``controlnet``), in the diffusers path and in plugin (k-diffusion) samplers alike.
- Noise comes from a CPU ``torch.Generator`` in float32 (moved afterwards), so a seed gives the same image on
  every device; the same generator feeds the schedulers' step noise, as diffusers' pipelines do.
- Inpainting with a "noise_mask": after each step the known region is put back at the next noise level
  (diffusers' inpaint pipeline for ordinary UNets); after the last step it is the original latent.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import concat as concat_in
from . import patches
from .controlnet import control_modules
from .controlnet import prepare as prepare_control
from .controlnet import unet_kwargs as control_kwargs
from .gligen import batchable as gligen_batchable
from .gligen import call as unet_call
from .gligen import prepare as prepare_gligen
from .model_sampling import needs_k_path, time_maps
from .model_sampling import sigma_table as _sigma_table  # noqa: F401  (imported from here by the other samplers)
from .noise import make_noise, start_noise  # noqa: F401  (make_noise: imported from here by the other samplers)
from .regions import Region, blend_prediction, region_of
from .schedulers import SAMPLERS, build_scheduler
from .types import DiffusionModel
from .unclip import class_labels as unclip_labels

#: callback(step, total, preview) after each model evaluation; it may raise to stop (e.g. Interrupted).
Callback = Callable[[int, int, "tuple[str, bytes] | None"], None]


@dataclass(frozen=True)
class SamplingOptions:
    """What KSampler / KSamplerAdvanced ask for."""

    sampler_name: str
    scheduler: str
    steps: int
    cfg: float
    seed: int
    denoise: float = 1.0
    add_noise: bool = True
    start_at_step: int = 0
    end_at_step: int = 10000
    return_with_leftover_noise: bool = False

    def step_range(self) -> tuple[int, int, int]:
        """(schedule length, first step, end step) in schedule steps; nothing to run when denoise is 0."""
        if self.denoise <= 0.0:
            return self.steps, self.steps, self.steps
        total = self.steps if self.denoise >= 0.9999 else int(self.steps / self.denoise)
        first = total - self.steps
        return total, first + self.start_at_step, first + min(self.end_at_step, self.steps)


@dataclass
class _Cond:
    """One conditioning entry on the device: embeddings [B, T, D], SDXL extras, weight, where/when it applies."""

    emb: Any
    added: dict[str, Any] | None
    weight: float
    region: Region | None = None
    control: tuple = ()  # the entry's ControlNet chain, ready on the device (``controlnet.Active``)
    class_labels: Any = None  # unCLIP UNets: the image-embedding input [B, dim] (``unclip.class_labels``)
    gligen: Any = None  # GLIGENTextBoxApply's boxes: (Gligen, position_net inputs) (``gligen.prepare``)
    concat: Any = None  # extra UNet input channels (InstructPix2Pix / inpainting UNets) (``concat.prepare``)


def output_latent(latent: dict[str, Any], downscale: int) -> dict[str, Any]:
    """A sampler's output LATENT before its samples are set: the input's keys but ``pixel_size``, with ``downscale``."""
    out = {k: v for k, v in latent.items() if k != "pixel_size"}
    out["downscale"] = downscale
    return out


def prepare_latent(model: DiffusionModel, latent: dict[str, Any]) -> Any:
    """The unscaled samples in the shape the model expects; re-creates an untouched EmptyLatentImage output."""
    import torch

    samples = latent["samples"]
    fmt = model.latent
    in_ch = int(model.unet.config.in_channels)
    if not concat_in.supported(model):  # wider UNets get their extra channels from the conditioning
        raise ValueError(f"the model's UNet takes {in_ch} input channels but its latents have {fmt.channels}, "
                         "neither an InstructPix2Pix nor an inpainting layout; use a regular checkpoint")
    downscale = int(latent.get("downscale", fmt.downscale))
    if samples.shape[1] == fmt.channels and downscale == fmt.downscale:
        return samples.float()
    if "pixel_size" in latent and not bool(samples.any()):
        height, width = latent["pixel_size"]
        return torch.zeros(samples.shape[0], fmt.channels, max(1, height // fmt.downscale),
                           max(1, width // fmt.downscale))
    raise ValueError(f"latent_image has {samples.shape[1]} channels at 1/{downscale} scale but {model.source} "
                     f"works on {fmt.channels} channels at 1/{fmt.downscale}; encode the image with this "
                     "checkpoint's VAE (VAEEncode) or start from EmptyLatentImage")


def _expand(t: Any, batch: int, what: str) -> Any:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0] == 0:
        return t.repeat(batch // t.shape[0], *([1] * (t.dim() - 1)))
    raise ValueError(f"{what} has a batch of {t.shape[0]}, which does not divide the latent batch of {batch}; "
                     "use a batch of 1 or the same batch size")


def _conds(model: DiffusionModel, conditioning: list, batch: int, pixel_hw: tuple[int, int], device: Any,
           dtype: Any, what: str) -> list[_Cond]:
    """Device tensors for every entry of a CONDITIONING list."""
    import torch

    cfg = model.unet.config
    text_time = getattr(cfg, "addition_embed_type", None) == "text_time"
    out = []
    for emb, extras in conditioning:
        added = None
        if text_time:
            pooled = extras.get("pooled_output")
            if pooled is None:
                raise ValueError(f"{what}: this SDXL model needs pooled text embeddings; encode the prompt with "
                                 "the same checkpoint's CLIP (CLIPTextEncode)")
            h, w = pixel_hw
            ids = [extras.get("height", h), extras.get("width", w), extras.get("crop_h", 0), extras.get("crop_w", 0),
                   extras.get("target_height", h), extras.get("target_width", w)]
            added = {"text_embeds": _expand(pooled, batch, what).to(device, dtype),
                     "time_ids": torch.tensor([ids] * batch, dtype=dtype, device=device)}
        latent_hw = (pixel_hw[0] // model.latent.downscale, pixel_hw[1] // model.latent.downscale)
        region = region_of(extras, latent_hw, model.latent.downscale, batch, device, what)
        control = prepare_control(extras.get("control"), batch, model.latent.downscale, device, dtype, what, cfg)
        out.append(_Cond(_expand(emb, batch, what).to(device, dtype), added, float(extras.get("strength", 1.0)),
                         region, control, unclip_labels(model, extras, batch, device, dtype, what),
                         prepare_gligen(extras, batch, latent_hw, model.latent.downscale, device, dtype),
                         concat_in.prepare(model, extras, batch, latent_hw, device, dtype, what)))
    if not out:
        raise ValueError(f"{what} is an empty conditioning list; connect a CLIPTextEncode output")
    return out


def _predict(unet: Any, x: Any, t: Any, entries: list[_Cond], dtype: Any) -> list[Any]:
    """The UNet's prediction for each entry; one batched call when the embeddings share a shape."""
    import torch

    n = len(entries)
    same = all(e.emb.shape == entries[0].emb.shape for e in entries) and gligen_batchable(entries)
    if same and n > 1:
        added = None
        if entries[0].added is not None:
            added = {k: torch.cat([e.added[k] for e in entries]) for k in entries[0].added}  # type: ignore[index]
        labels = None if entries[0].class_labels is None else torch.cat([e.class_labels for e in entries])
        out = unet_call(unet, entries, concat_in.with_concat(x.to(dtype), entries), t,
                        encoder_hidden_states=torch.cat([e.emb for e in entries]), added_cond_kwargs=added,
                        class_labels=labels, **control_kwargs(entries, x, t, dtype)).sample.float()
        return list(out.chunk(n))
    return [unet_call(unet, [e], concat_in.with_concat(x.to(dtype), [e]), t, encoder_hidden_states=e.emb,
                      added_cond_kwargs=e.added, class_labels=e.class_labels,
                      **control_kwargs([e], x, t, dtype)).sample.float() for e in entries]


def _average(preds: list[Any], entries: list[_Cond]) -> Any:
    if len(preds) == 1:
        return preds[0]
    total = sum(e.weight for e in entries) or 1.0
    return sum(p * e.weight for p, e in zip(preds, entries)) / total


def side_predictions(unet: Any, x: Any, t: Any, conds: list[_Cond], unconds: list[_Cond],
                     dtype: Any) -> tuple[Any, Any]:
    """(positive, negative or None) predictions, each side averaged (or area-composed) over its entries."""
    if any(e.region is not None for e in conds + unconds):  # the negative first, as in the batched call
        uncond = blend_prediction(unet, x, t, unconds, dtype) if unconds else None
        return blend_prediction(unet, x, t, conds, dtype), uncond
    preds = _predict(unet, x, t, unconds + conds, dtype)
    cond = _average(preds[len(unconds):], conds)
    return cond, (_average(preds[:len(unconds)], unconds) if unconds else None)


def guided_prediction(unet: Any, x: Any, t: Any, conds: list[_Cond], unconds: list[_Cond], cfg: float,
                      dtype: Any) -> Any:
    """uncond + cfg * (cond - uncond), each side averaged over its entries (cond alone when there is no uncond)."""
    cond, uncond = side_predictions(unet, x, t, conds, unconds, dtype)
    if uncond is None:
        return cond
    return uncond + cfg * (cond - uncond)


def _sigma_k(scheduler: Any, t: Any) -> float:
    """sigma of a k-diffusion scheduler at its current entry, read back from its input scaling 1/sqrt(sigma²+1)."""
    import torch

    c = float(scheduler.scale_model_input(torch.ones(1, dtype=torch.float64), t)[0])
    return math.sqrt(max(1.0 / (c * c) - 1.0, 0.0))


def _sigma_vp(scheduler: Any, t: Any) -> float:
    a = float(scheduler.alphas_cumprod[int(round(float(t)))])
    return math.sqrt((1.0 - a) / a)


def predict_x0(scheduler: Any, space: str, x: Any, out: Any, t: Any, prediction_type: str) -> Any:
    """The clean-latent estimate from a model output, in the scheduler's parametrisation."""
    if prediction_type == "sample":
        return out
    if space == "k":
        s = _sigma_k(scheduler, t)
        if prediction_type == "v_prediction":
            return x / (s * s + 1) - out * (s / math.sqrt(s * s + 1))
        return x - s * out
    a = float(scheduler.alphas_cumprod[int(round(float(t)))])
    if prediction_type == "v_prediction":
        return math.sqrt(a) * x - math.sqrt(1 - a) * out
    return (x - math.sqrt(1 - a) * out) / math.sqrt(a)


@contextlib.contextmanager
def lora_applied(target: Any, library: Any = None) -> Iterator[None]:
    """Apply a MODEL's or CLIP's LoRA patches for the duration (enter after moving it to its device)."""
    if not target.loras:
        yield
        return
    from . import lora

    with lora.applied(target, library=library):
        yield


def _resize_mask(mask: Any, batch: int, h: int, w: int) -> Any:
    import torch.nn.functional as F

    m = mask.float()
    m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return _expand(m, batch, "noise_mask").clamp(0.0, 1.0)


def sample(model: DiffusionModel, positive: list, negative: list, latent: dict[str, Any], opts: SamplingOptions,
           devices: Any, callback: Callback | None = None, preview_every: int = 4,
           lora_library: Any = None, samplers: Any = None) -> dict[str, Any]:
    """Run the sampler on ``devices`` (a DeviceManager); returns the output LATENT (``latent`` with new samples).

    ``samplers`` (a ``custom.SamplerRegistry``) supplies plugin samplers and schedules by name.
    """
    import torch

    from .devices import for_model
    from .patch_run import PatchedRun, encoder
    from .preview import preview_jpeg

    devices = for_model(devices, model)  # ModelComputeDtype
    if getattr(model, "family", "unet") != "unet":  # flow-matching transformers (Flux): nodegraph.diffusion.flow
        from .flow.sampling import sample as flow_sample
        return flow_sample(model, positive, negative, latent, opts, devices, callback, preview_every, lora_library,
                           samplers)
    samples = prepare_latent(model, latent)
    out_latent = output_latent(latent, model.latent.downscale)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return dict(out_latent, samples=samples)
    from .custom import k_route  # no faithful diffusers plan, or a model without diffusers form: k-diffusion form
    samplers = k_route(samplers, opts.sampler_name, opts.scheduler, force=needs_k_path(model.scheduler_config))
    if samplers is not None and opts.sampler_name in samplers.samplers:
        return dict(out_latent, samples=_sample_plugin(model, positive, negative, latent, samples, opts, devices,
                                                       callback, preview_every, lora_library, samplers))
    spec = SAMPLERS[opts.sampler_name]
    scheduler = build_scheduler(opts.sampler_name, opts.scheduler, model.scheduler_config, total, opts.seed)
    all_ts = scheduler.timesteps
    i0, i1 = s0 * scheduler.order, min(s1 * scheduler.order, len(all_ts))
    finish_x0 = s1 < total and not opts.return_with_leftover_noise
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(i0)
    fmt = model.latent
    gen, noise = start_noise(opts, samples, latent)  # the scheduler's steps draw from gen next
    step_kw = {"generator": gen} if "generator" in inspect.signature(scheduler.step).parameters else {}
    prediction = model.prediction_type
    unet = model.unet
    with control_modules(positive, negative) as controls, devices.use(unet, *controls), \
            lora_applied(model, lora_library), patches.applied(model) as active, torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean, noise, mask, conds, unconds = _on_device(model, positive, negative, latent, samples, noise, opts,
                                                        device, dtype)
        run = None if active is None else PatchedRun(model, active, scheduler, spec.space, all_ts, i0, i1,
                                                     encoder(model, samples, device, dtype))
        t0 = all_ts[i0]
        if opts.add_noise:
            x = scheduler.add_noise(clean, noise, t0.reshape(1))
        else:
            x = clean / math.sqrt(1 + _sigma_vp(scheduler, t0) ** 2) if spec.space == "vp" else clean.clone()
        count = i1 - i0
        for i in range(i0, i1):
            t = all_ts[i]
            x_in = scheduler.scale_model_input(x, t)  # the MODEL's patches, if any, guide through ``run``
            guided = guided_prediction(unet, x_in, t, conds, unconds, opts.cfg, dtype) if run is None else \
                run.prediction(x_in, t, i, conds, unconds, opts.cfg, dtype)
            last = i == i1 - 1
            x0 = None
            if last and finish_x0:
                x = x0 = predict_x0(scheduler, spec.space, x, guided, t, prediction)
            else:
                show = callback is not None and ((i - i0 + 1) % preview_every == 0 or last)
                if show:
                    x0 = predict_x0(scheduler, spec.space, x, guided, t, prediction)
                x = scheduler.step(guided, t, x, **step_kw).prev_sample
            if mask is not None:
                nxt = i + 1
                known = clean if (last and finish_x0) or nxt >= len(all_ts) else \
                    scheduler.add_noise(clean, noise, all_ts[nxt].reshape(1))
                step_mask = mask if run is None else run.mask(mask, i)
                x = step_mask * x + (1.0 - step_mask) * known
            if callback is not None:
                preview = preview_jpeg(x0 / fmt.scaling_factor + fmt.shift_factor, fmt) if x0 is not None else None
                callback(i - i0 + 1, count, preview)
        if i1 < len(all_ts) and not finish_x0 and spec.space == "vp":
            x = x * math.sqrt(1 + _sigma_vp(scheduler, all_ts[i1]) ** 2)  # leftover noise as x0 + sigma * noise
        result = (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()
    return dict(out_latent, samples=result)


def _on_device(model: DiffusionModel, positive: list, negative: list, latent: dict[str, Any], samples: Any, noise: Any,
               opts: SamplingOptions, device: Any, dtype: Any) -> tuple[Any, Any, Any, list, list]:
    """The sampling inputs on ``device``: scaled clean latents, noise, the resized noise mask (or None) and the
    positive and negative conditionings (no negative at cfg 1)."""
    fmt = model.latent
    batch, _, h, w = samples.shape
    clean = ((samples - fmt.shift_factor) * fmt.scaling_factor).to(device)
    mask = None
    if latent.get("noise_mask") is not None:
        mask = _resize_mask(latent["noise_mask"], batch, h, w).to(device)
    pixel_hw = (h * fmt.downscale, w * fmt.downscale)
    conds = _conds(model, positive, batch, pixel_hw, device, dtype, "positive")
    skip = opts.cfg == 1.0 and not patches.needs_uncond(model)
    unconds = [] if skip else _conds(model, negative, batch, pixel_hw, device, dtype, "negative")
    return clean, noise.to(device), mask, conds, unconds


def _sample_plugin(model: DiffusionModel, positive: list, negative: list, latent: dict[str, Any], samples: Any,
                   opts: SamplingOptions, devices: Any, callback: Callback | None, preview_every: int,
                   lora_library: Any, samplers: Any) -> Any:
    """Run a plugin sampler (k-diffusion convention) over the step range of ``opts``; returns unscaled samples."""
    import numpy as np
    import torch

    from .custom import KDenoiser
    from .patch_run import attach
    from .preview import preview_jpeg

    total, s0, s1 = opts.step_range()
    train = _sigma_table(model.scheduler_config)
    full = samplers.sigmas(opts.scheduler, total, 1.0 / (train ** 2 + 1.0), time_maps(model.scheduler_config))
    keep_noise = s1 < total and opts.return_with_leftover_noise
    sig = full[s0:s1 + 1] if s1 >= total or keep_noise else np.append(full[s0:s1], 0.0)
    fmt = model.latent
    gen, noise = start_noise(opts, samples, latent)
    with control_modules(positive, negative) as controls, devices.use(model.unet, *controls), \
            lora_applied(model, lora_library), patches.applied(model) as active, torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean, noise, mask, conds, unconds = _on_device(model, positive, negative, latent, samples, noise, opts,
                                                        device, dtype)
        x = clean + noise * float(sig[0])
        denoiser = KDenoiser(model, conds, unconds, list(positive), opts.cfg, dtype, mask, clean)
        attach(denoiser, active, model, samples, sig, device, dtype)

        def step_done(step: int, count: int, x0: Any) -> None:
            if callback is None:
                return
            show = step % preview_every == 0 or step == count
            callback(step, count, preview_jpeg(x0 / fmt.scaling_factor + fmt.shift_factor, fmt) if show else None)

        sigmas = torch.tensor(sig, dtype=torch.float32, device=device)
        x = samplers.samplers[opts.sampler_name].fn(denoiser, x, sigmas, generator=gen, callback=step_done)
        if mask is not None:
            x = mask * x + (1.0 - mask) * (clean + noise * float(sig[-1]))
        return (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()

