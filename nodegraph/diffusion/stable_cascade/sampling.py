"""Sampling Stable Cascade's stage C and stage B with ComfyUI's conventions on the k-diffusion samplers.

Both stages are ComfyUI's ``ModelType.STABLE_CASCADE``: EPS prediction with StableCascadeSampling (``schedule``).
KSampler computes ComfyUI's sigmas for (sampler, scheduler) over the model's table (``flow_sigmas``, plugin schedules
through the engine's table) and runs the built-in k-diffusion sampler (``ksamplers``) or a plugin's on
``CascadeDenoiser``; SamplerCustomAdvanced runs the given SAMPLER on the given SIGMAS.

What the UNet sees per CONDITIONING entry (ComfyUI's ``StableCascade_C``/``_B.extra_conds``):
- stage C: ``clip_text`` (the CLIP-G hidden states), ``clip_text_pooled`` (``pooled_output``), ``clip_img`` (the
  unCLIPConditioning image embeddings times their strength, zeros [1, 1, 768] without them);
- stage B: ``clip_text_pooled`` and ``effnet``: the stage C latent StableCascade_StageB_Conditioning put under
  ``stable_cascade_prior`` (zeros when absent, as ComfyUI's negative usually is).
"""

from __future__ import annotations

from typing import Any

from .. import k_family
from ..k_family import KFamily, strength_mean
from .schedule import CascadeSigmas, c_in

FAMILY = "stable_cascade"
_UNSUPPORTED = ("area", "mask", "start_percent", "end_percent", "control", "gligen")


def _flow(model: Any) -> CascadeSigmas:
    return model.flow if isinstance(model.flow, CascadeSigmas) else CascadeSigmas()


def stage_of(unet: Any) -> str:
    """"c" for a prior (stage C) UNet, "b" for a decoder (stage B) one."""
    return "b" if getattr(unet.config, "effnet_in_channels", None) else "c"


class CascadeDenoiser:
    """``custom.Denoiser`` over a Stable Cascade UNet: ``denoiser(x, sigma)`` is the guided x0 of a latent batch."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None) -> None:
        if model.patches:
            names = ", ".join(type(p).__name__ for p in model.patches)
            raise ValueError(f"sampling patches ({names}) do not apply to Stable Cascade here; remove those nodes")
        self.unet, self.dtype, self.device = model.unet, dtype, device
        self.flow = _flow(model)
        self.stage = stage_of(model.unet)
        self.conditioning, self.cfg = list(positive), float(cfg)
        self.mask, self.clean = mask, clean
        self.conds = self.encode(positive, "positive")
        self.unconds = [] if self.cfg == 1.0 else self.encode(negative, "negative")

    def encode(self, conditioning: list, what: str = "conditioning") -> list[dict[str, Any]]:
        """The UNet inputs of each CONDITIONING entry (on the device) and its strength."""

        if not conditioning:
            raise ValueError(f"{what} is an empty conditioning list; connect a CLIPTextEncode output")
        out = []
        for emb, extras in conditioning:
            bad = [k for k in _UNSUPPORTED if extras.get(k) is not None]
            if bad:
                raise ValueError(f"{what}: {', '.join(bad)} conditioning does not apply to Stable Cascade here; "
                                 "remove those nodes")
            pooled = extras.get("pooled_output")
            if pooled is None:
                raise ValueError(f"{what} has no pooled output; encode the prompt with the Stable Cascade CLIP "
                                 "(CLIP-G from the stage C checkpoint or CLIPLoader type stable_cascade)")
            pooled = pooled.reshape(pooled.shape[0], 1, -1)
            entry: dict[str, Any] = {"clip_text_pooled": pooled.to(self.device, self.dtype),
                                     "strength": float(extras.get("strength", 1.0))}
            if self.stage == "c":
                width = int(self.unet.config.clip_text_in_channels)
                emb = emb[None] if emb.dim() == 2 else emb
                if emb.shape[-1] != width:
                    raise ValueError(f"{what}: text embeddings of width {emb.shape[-1]} do not fit stage C "
                                     f"(clip_text {width}); use the Stable Cascade CLIP-G")
                entry["clip_text"] = emb.to(self.device, self.dtype)
                entry["clip_img"] = _clip_img(extras, int(self.unet.config.clip_image_in_channels)).to(
                    self.device, self.dtype)
            else:
                prior = extras.get("stable_cascade_prior")
                entry["effnet"] = None if prior is None else prior.float().to(self.device, self.dtype)
            out.append(entry)
        return out

    def _eval(self, x: Any, sigma: float, entry: dict[str, Any]) -> Any:
        import torch

        b = x.shape[0]
        x_in = (x * c_in(sigma)).to(self.dtype)
        ratio = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=self.dtype)
        kwargs = {"clip_text_pooled": _batch(entry["clip_text_pooled"], b)}
        if self.stage == "c":
            kwargs["clip_text"] = _batch(entry["clip_text"], b)
            kwargs["clip_img"] = _batch(entry["clip_img"], b)
        else:
            effnet = entry["effnet"]
            if effnet is None:  # ComfyUI's default prior: zeros of the size stage C would have at compression 42
                effnet = torch.zeros((1, 16, (x.shape[2] * 4) // 42, (x.shape[3] * 4) // 42), device=x.device,
                                     dtype=self.dtype)
            kwargs["effnet"] = _batch(effnet, b)
        eps = self.unet(sample=x_in, timestep_ratio=ratio, return_dict=False, **kwargs)[0]
        return x - eps.float() * sigma

    def _side(self, x: Any, sigma: float, entries: list[dict[str, Any]]) -> Any:
        return strength_mean([self._eval(x, sigma, e) for e in entries], [e["strength"] for e in entries])

    def split(self, x: Any, sigma: float) -> tuple[Any, Any]:
        """(positive x0, negative x0 or None when cfg is 1)."""
        cond = self._side(x, sigma, self.conds)
        return cond, (self._side(x, sigma, self.unconds) if self.unconds else None)

    def __call__(self, x: Any, sigma: float) -> Any:
        cond, uncond = self.split(x, float(sigma))
        out = cond if uncond is None else uncond + self.cfg * (cond - uncond)
        return out if self.mask is None else self.mask * out + (1.0 - self.mask) * self.clean


def _batch(t: Any, b: int) -> Any:
    """``t`` repeated (or cut) to ``b`` rows along the batch axis."""
    if t.shape[0] == b:
        return t
    reps = -(-b // t.shape[0])
    return t.repeat(reps, *([1] * (t.dim() - 1)))[:b]


def _clip_img(extras: dict[str, Any], width: int) -> Any:
    """ComfyUI's ``clip_img``: unCLIP image embeddings × strength side by side, else zeros [1, 1, width]."""
    import torch

    items = extras.get("unclip_conditioning") or []
    if not items:
        return torch.zeros((1, 1, width))
    embeds = []
    for item in items:
        e = item["clip_vision_output"].image_embeds.float()
        if e.shape[-1] != width:
            raise ValueError(f"unCLIPConditioning: image embeddings of width {e.shape[-1]} do not fit stage C "
                             f"(clip_img {width}); use the checkpoint's CLIP vision (ViT-L/14)")
        embeds.append(e.unsqueeze(0) * float(item.get("strength", 1.0)))
    return torch.cat(embeds, dim=1)


def prepare_latent(model: Any, latent: dict[str, Any]) -> Any:
    """The unscaled samples [B, C, h, w] of a LATENT, checked against the stage's channels."""
    samples = latent["samples"].float()
    channels = int(model.unet.config.in_channels)
    if samples.dim() != 4 or samples.shape[1] != channels:
        stage = "C (16 channels)" if stage_of(model.unet) == "c" else "B (4 channels)"
        raise ValueError(f"latent_image has shape {tuple(samples.shape)} but {model.source} is Stable Cascade stage "
                         f"{stage}; connect the matching output of StableCascade_EmptyLatentImage")
    return samples


def schedule(model: Any, view: Any, scheduler: str, steps: int) -> Any:
    """ComfyUI's sigmas (steps + 1, float64 numpy) of ``scheduler`` over the model's StableCascadeSampling."""
    import numpy as np

    from ..flow.schedule import flow_sigmas

    flow = _flow(model)
    discard = bool(getattr(view, "discard", False))
    n = steps + 1 if discard else steps
    if scheduler in getattr(view, "schedules", {}):
        table = flow.table()
        out = np.asarray(view.schedules[scheduler].fn(n, table), dtype=np.float64)
    else:
        out = flow_sigmas(scheduler, n, flow)
    return np.concatenate([out[:-2], out[-1:]]) if discard else out


def _denoiser(model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any, samples: Any,
              mask: Any, clean: Any) -> CascadeDenoiser:
    return CascadeDenoiser(model, positive, negative, cfg, dtype, device, mask, clean)


#: The Stable Cascade side of the shared k-diffusion path (``k_family``).
CASCADE = KFamily("Stable Cascade", prepare_latent, schedule, _denoiser, lambda model: _flow(model).sigma_max)


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """``families.SAMPLERS`` entry: KSampler(Advanced) on a Stable Cascade stage (ComfyUI's sigmas and step cuts)."""
    return k_family.sample(CASCADE, model, positive, negative, latent, opts, devices, callback, preview_every,
                           lora_library, samplers)


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """``families.CUSTOM_SAMPLERS`` entry: SamplerCustomAdvanced on a Stable Cascade stage: (output, denoised)."""
    return k_family.sample_custom(CASCADE, guider, sampler, sigmas, noise, latent, devices, callback, model=model,
                                  lora_library=lora_library, preview_every=preview_every)


__all__ = ["CASCADE", "FAMILY", "CascadeDenoiser", "prepare_latent", "sample", "sample_custom", "schedule",
           "stage_of"]
