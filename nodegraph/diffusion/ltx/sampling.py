"""Sampling an LTX-Video model (``family == "ltxv"``): KSampler/KSamplerAdvanced and SamplerCustom(Advanced).

- Latents: video LATENTs ``[B, 128, T, h, w]`` of normalised VAE latents (EmptyLTXVLatentVideo); the transformer
  reads them as 1×1×1 patches ``[B, T·h·w, 128]`` at noise level sigma, x = (1 - sigma) x0 + sigma noise.
- The transformer gets the timestep ``sigma · 1000``, the T5 states with their attention mask and rotary positions
  scaled by (8 / frame_rate, 32, 32) — the entry's ``frame_rate`` (LTXVConditioning; 25 without it), as
  ``LTXPipeline`` does; files whose metadata asks for causal temporal positions (0.9.5+) place latent frame t at
  pixel frame max(0, 8t - 7), as ComfyUI and ``LTXConditionPipeline`` do; an entry's ``keyframe_idxs``
  (LTXVAddGuide) give the last tokens the positions of the frames they guide. It predicts the velocity;
  x0 = x - sigma · v; cfg mixes positive and negative predictions.
- Noise levels: KSampler uses the model's ``FlowSettings`` (ComfyUI's default shift 2.37, ModelSamplingLTXV sets
  another); SamplerCustom takes LTXVScheduler's SIGMAS (``ltx_sigmas``, the pipeline's schedule).
- A ``noise_mask`` [B, 1, T, 1, 1] (LTXVImgToVideo, LTXVAddGuide) keeps frames: where it is 0 the latent stays the given one and
  those tokens see timestep sigma · mask, as ComfyUI's LTXV model does.
"""

from __future__ import annotations

import math
from typing import Any

from ..flow.sampling import refuse_regions, require_conditioning

DEFAULT_FRAME_RATE = 25.0
SPATIAL, TEMPORAL = 32, 8


def ltx_sigmas(steps: int, max_shift: float = 2.05, base_shift: float = 0.95, stretch: bool = True,
               terminal: float = 0.1, tokens: int = 4096) -> Any:
    """LTXVScheduler's SIGMAS (float32, ending in 0): shifted by the latent's token count, stretched to ``terminal``."""
    import torch

    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    slope = (max_shift - base_shift) / (4096 - 1024)
    shift = tokens * slope + (base_shift - slope * 1024)
    live = sigmas != 0
    shifted = math.exp(shift) / (math.exp(shift) + (1.0 / sigmas[live] - 1.0))
    sigmas[live] = shifted
    if stretch and bool(live.any()):
        rest = 1.0 - sigmas[live]
        sigmas[live] = 1.0 - rest / (rest[-1] / (1.0 - terminal))
    return sigmas


def prepare_video_latent(model: Any, latent: dict[str, Any]) -> Any:
    """The video samples [B, 128, T, h, w] float32, checked against the model's latent channels."""
    samples = latent["samples"]
    channels = int(model.unet.config.in_channels)
    if samples.dim() != 5 or samples.shape[1] != channels:
        raise ValueError(f"latent_image is {tuple(samples.shape)} but {model.source} (LTX-Video) samples video "
                         f"latents [B, {channels}, T, h, w]; start from EmptyLTXVLatentVideo or LTXVImgToVideo")
    return samples.float()


def pixel_coords(batch: int, frames: int, height: int, width: int, causal: bool) -> Any:
    """Token positions [B, 3, T·h·w] in pixels and pixel frames: (8t, 32y, 32x); ``causal``: frame max(0, 8t - 7)."""
    import torch

    grid = torch.stack(torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width),
                                      indexing="ij")).reshape(1, 3, -1).float()
    grid = grid * torch.tensor([TEMPORAL, SPATIAL, SPATIAL], dtype=torch.float32).view(1, 3, 1)
    if causal:
        grid[:, 0] = (grid[:, 0] + 1 - TEMPORAL).clamp(min=0)
    return grid.expand(batch, 3, -1).clone()


class LTXDenoiser:
    """``denoiser(x, sigma)``: the guided x0 estimate of an LTX-Video transformer."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None) -> None:
        self.transformer, self.dtype, self.device = model.unet, dtype, device
        from ..ksamplers.forms import rectified_flow_of

        self.noise_form = rectified_flow_of(model)  # the ancestral/SDE samplers' rectified-flow forms
        self.causal = bool(model.scheduler_config.get("causal_temporal_positioning", False))
        self.cfg = float(cfg)
        self.mask, self.clean = mask, clean
        self.conds = self._entries(positive, "positive")
        self.unconds = [] if self.cfg == 1.0 else self._entries(negative, "negative")

    def _entries(self, conditioning: list, what: str) -> list[tuple[Any, Any, float, float]]:
        import torch

        require_conditioning(conditioning, what)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "LTX-Video models")
            if emb.shape[-1] != int(self.transformer.config.caption_channels):
                raise ValueError(f"{what}: the text states are {emb.shape[-1]} wide but this LTX-Video model reads "
                                 f"{self.transformer.config.caption_channels}; encode the prompt with a CLIPLoader "
                                 "type ltxv (T5-XXL)")
            mask = extras.get("attention_mask")
            mask = torch.ones(emb.shape[:2], dtype=torch.long) if mask is None else mask
            keyframes = extras.get("keyframe_idxs")
            out.append((emb.to(self.device, self.dtype), mask.to(self.device),
                        float(extras.get("strength", 1.0)), float(extras.get("frame_rate", DEFAULT_FRAME_RATE)),
                        None if keyframes is None else keyframes.float().to(self.device)))
        return out

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, mask, _, frame_rate, keyframes = entry
        b, _, t, h, w = x.shape
        if emb.shape[0] != b:
            if b % emb.shape[0]:
                raise ValueError(f"a conditioning has a batch of {emb.shape[0]}, which does not divide the latent "
                                 f"batch of {b}; use a batch of 1 or the same batch size")
            emb, mask = emb.repeat(b // emb.shape[0], 1, 1), mask.repeat(b // mask.shape[0], 1)
        tokens = x.flatten(2).transpose(1, 2)
        if self.mask is None:
            timestep = torch.full((b,), sigma * 1000.0, device=x.device, dtype=torch.float32)
        else:  # kept frames see a lower noise level (sigma · mask), per token
            keep = self.mask.expand(b, 1, t, h, w).flatten(2).transpose(1, 2)[..., 0]
            timestep = sigma * 1000.0 * keep.float()
        rate = frame_rate if frame_rate > 0 else float(TEMPORAL)
        if self.causal or keyframes is not None:  # positions in pixels: 0.9.5+'s causal frames, guide frames
            coords = pixel_coords(b, t, h, w, self.causal).to(x.device)
            if keyframes is not None:  # LTXVAddGuide's frames, appended to the latent, sit where they guide
                count = keyframes.shape[2]
                if count > coords.shape[2]:
                    raise ValueError("the conditioning's guide frames (LTXVAddGuide) do not fit this latent; use "
                                     "the latent LTXVAddGuide returns with its conditioning")
                coords[:, :, -count:] = keyframes.expand(b, 3, count)
            coords[:, 0] = coords[:, 0] / rate
            kwargs = {"video_coords": coords}
        else:
            kwargs = {"num_frames": t, "height": h, "width": w,
                      "rope_interpolation_scale": (TEMPORAL / rate, SPATIAL, SPATIAL)}
        out = self.transformer(hidden_states=tokens.to(self.dtype), encoder_hidden_states=emb, timestep=timestep,
                               encoder_attention_mask=mask, return_dict=False, **kwargs)[0]
        return out.float().transpose(1, 2).reshape(b, -1, t, h, w)

    def _side(self, x: Any, sigma: float, entries: list) -> Any:
        if len(entries) == 1:
            return self._velocity(x, sigma, entries[0])
        total = sum(e[2] for e in entries) or 1.0
        return sum(self._velocity(x, sigma, e) * e[2] for e in entries) / total

    def __call__(self, x: Any, sigma: Any) -> Any:
        sigma = float(sigma)
        out = x - sigma * self._side(x, sigma, self.conds)
        if self.unconds:
            uncond = x - sigma * self._side(x, sigma, self.unconds)
            out = uncond + self.cfg * (out - uncond)
        if self.mask is not None:
            out = out * self.mask + self.clean * (1.0 - self.mask)
        return out


def _run(model: Any, positive: list, negative: list, cfg: float, samples: Any, noise: Any, sig: Any, fn: Any,
         gen: Any, mask: Any, devices: Any, callback: Any, preview_every: int,
         lora_library: Any = None) -> tuple[Any, Any]:
    """(final latent, last x0 or None): ``fn`` from sigma[0] to sigma[-1] with ComfyUI's inverse noise scaling."""
    import torch

    from ..sampling import lora_applied

    last: dict[str, Any] = {}
    with devices.use(model.unet), lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean, noise = samples.to(device), noise.to(device)
        mask = None if mask is None else mask.to(device)
        denoiser = LTXDenoiser(model, positive, negative, cfg, dtype, device, mask, clean)
        first = float(sig[0])
        x = first * noise + (1.0 - first) * clean
        if mask is not None:
            x = x * mask + clean * (1.0 - mask)

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                callback(step, count, None)  # no latent preview for 128-channel video latents yet

        if len(sig) > 1:
            x = fn(denoiser, x, torch.as_tensor(sig, dtype=torch.float32).to(device), generator=gen,
                   callback=step_done)
        end = float(sig[-1])
        if mask is not None:
            x = x * mask + (end * noise + (1.0 - end) * clean) * (1.0 - mask)
        x = x / (1.0 - end) if end < 1.0 else x
        x0 = last.get("x0")
        return x.float().cpu(), None if x0 is None else x0.float().cpu()


def _mask(latent: dict[str, Any], samples: Any) -> Any:
    mask = latent.get("noise_mask")
    if mask is None:
        return None
    mask = mask.float()
    if mask.dim() != 5 or mask.shape[2] != samples.shape[2]:
        raise ValueError(f"the noise mask {tuple(mask.shape)} does not fit the video latent {tuple(samples.shape)}; "
                         "use LTXVImgToVideo's latent as it comes, or remove SetLatentNoiseMask")
    return mask


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """Denoise a video ``latent`` with an LTX-Video model (KSampler's contract, see ``sampling.sample``)."""

    from ..flow.sampling import sampler_fn, sigmas_for
    from ..noise import start_noise
    from ..sampling import output_latent

    samples = prepare_video_latent(model, latent)
    out = output_latent(latent, SPATIAL)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return dict(out, samples=samples)
    gen, noise = start_noise(opts, samples, latent)
    result, _ = _run(model, positive, negative, opts.cfg, samples, noise, sigmas_for(model, opts),
                     sampler_fn(opts.sampler_name, samplers), gen, _mask(latent, samples), devices, callback,
                     preview_every, lora_library)
    return dict(out, samples=result)


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustom(Advanced) on an LTX-Video model: (output, denoised_output) LATENTs."""
    import torch

    from ..flow.custom import _conditionings
    from ..guiders import draw_noise
    from ..sampling import output_latent

    model = model if model is not None else guider.model
    positive, negative, cfg = _conditionings(guider)
    samples = prepare_video_latent(model, latent)
    out = output_latent(latent, SPATIAL)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = dict(out, samples=samples)
        return done, done
    start, gen = draw_noise(noise, dict(latent, samples=samples))
    result, x0 = _run(model, positive, negative, cfg, samples, start, sig, sampler, gen, _mask(latent, samples),
                      devices, callback, preview_every, lora_library)
    done = dict(out, samples=result)
    return done, (dict(out, samples=x0) if x0 is not None else done)


__all__ = ["DEFAULT_FRAME_RATE", "LTXDenoiser", "ltx_sigmas", "pixel_coords", "prepare_video_latent", "sample",
           "sample_custom"]
