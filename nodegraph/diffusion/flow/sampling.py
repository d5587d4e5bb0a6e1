"""Sampling a flow-matching transformer (Flux.1, SD3) with KSampler's semantics, in the k-diffusion convention.

- Noise levels: ``schedule.flow_sigmas`` on the model's ``FlowSettings`` (ModelSamplingFlux's shift), with
  KSampler's ``denoise`` and KSamplerAdvanced's start/end steps cut exactly as ComfyUI cuts them.
- The latent starts at sigma0 * noise + (1 - sigma0) * latent (ComfyUI's CONST noise scaling); a latent returned
  with leftover noise is divided by (1 - sigma) as ComfyUI does, so a second KSamplerAdvanced continues it.
- The denoiser packs the latent into 2×2-patch tokens with their position ids, calls the transformer with the
  timestep sigma, the T5 states, CLIP-L pooled output and the "guidance" of each conditioning entry (3.5 when
  none is set, as ComfyUI), and returns x0 = x - sigma * v; cfg != 1 adds the negative prediction as usual.
  "reference_latents" on an entry (ReferenceLatent, Flux Kontext) are appended as tokens with index 1; Fill and
  Canny/Depth models (more input channels) get the entry's "concat_latent_image" (and, Fill, "concat_mask" folded
  into 64 channels) beside the latent, as ComfyUI's concat_cond. SD3 models take the latent unpacked, the timestep
  sigma × 1000 and the pooled CLIP-L + CLIP-G output (``sd3.velocity``).
- Samplers: a plugin's, else ``ksamplers`` (ComfyUI's k-diffusion samplers), else the built-in ``euler``. The
  denoiser declares the rectified-flow noise form (``noise_form``), so the ancestral and SDE samplers run their
  rectified-flow forms (ComfyUI's CONST maths), and ``sampler_fn`` declares it for denoisers that do not.
- Noise comes from a CPU generator in float32 exactly as KSampler draws it (``sampling.make_noise``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..block_skip import dit_slg_patches, negative_skips, skipped_blocks
from ..block_skip import post_cfg as dit_post_cfg
from ..patches import CFGNorm, cfg_norm, patches_of, pre_cfg
from .latents import image_ids, pack, pad_even, text_ids, unpack
from .schedule import flow_sigmas

DEFAULT_GUIDANCE = 3.5
_REGION_KEYS = ("area", "mask", "start_percent", "end_percent")


def require_conditioning(conditioning: list, what: str) -> None:
    """ValueError when ``what`` (positive, negative, …) is an empty CONDITIONING list."""
    if not conditioning:
        raise ValueError(f"{what} is an empty conditioning list; connect a CLIPTextEncode output")


def refuse_regions(extras: dict[str, Any], what: str, target: str) -> None:
    """ValueError when a CONDITIONING entry carries area, mask or timestep-range conditioning (``target`` has none)."""
    if any(extras.get(k) is not None for k in _REGION_KEYS):
        raise ValueError(f"{what}: area, mask and timestep-range conditioning do not apply to {target} here yet; "
                         "remove the ConditioningSetArea/SetMask/SetTimestepRange nodes")


def refuse_controls(extras: dict[str, Any], what: str, target: str) -> None:
    """ValueError when a CONDITIONING entry carries ControlNets, which ``target`` does not run."""
    if extras.get("control") is not None:
        raise ValueError(f"{what}: ControlNets on {target} are not supported yet (they would be ignored); remove the "
                         "Apply ControlNet node for this model")


def euler(denoiser: Any, x: Any, sigmas: Any, *, generator: Any = None, callback: Any = None) -> Any:
    """Euler steps x += (x - x0) / sigma * (sigma_next - sigma): the velocity times the step."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
        x0 = denoiser(x, sigma)
        x = x + (x - x0) / sigma * (nxt - sigma)
        if callback is not None:
            callback(i + 1, n, x0)
    return x


def sampler_fn(name: str, registry: Any = None) -> Any:
    """The k-diffusion-convention sampler ``name`` for a flow model; ValueError with the reason when it cannot run."""
    if registry is not None and name in getattr(registry, "samplers", {}):
        return registry.samplers[name].fn
    try:
        from ..ksamplers import KSAMPLERS
        from ..ksamplers.forms import as_flow_sampler
    except ImportError:  # pragma: no cover - the package ships with nodegraph
        KSAMPLERS, as_flow_sampler = {}, None
    if name in KSAMPLERS:  # ancestral/SDE samplers use their rectified-flow forms (the denoiser's noise_form)
        return as_flow_sampler(KSAMPLERS[name])
    if name in ("euler", "ddim"):  # ComfyUI runs ddim as euler
        return euler
    known = sorted({"euler", *KSAMPLERS})
    raise ValueError(f"sampler {name!r} does not run on flow-matching models (Flux) yet; choose one of: "
                     f"{', '.join(known)}")


def prepare_latent(model: Any, latent: dict[str, Any]) -> Any:
    """The unscaled samples [B, C, h, w] in the model's latent shape (an untouched empty latent is re-made)."""
    import torch

    samples, fmt = latent["samples"], model.latent
    downscale = int(latent.get("downscale", fmt.downscale))
    if samples.shape[1] == fmt.channels and downscale == fmt.downscale:
        return samples.float()
    if "pixel_size" in latent and not bool(samples.any()):
        h, w = latent["pixel_size"]
        return torch.zeros(samples.shape[0], fmt.channels, max(1, h // fmt.downscale), max(1, w // fmt.downscale))
    raise ValueError(f"latent_image has {samples.shape[1]} channels at 1/{downscale} scale but {model.source} works "
                     f"on {fmt.channels} channels at 1/{fmt.downscale}; start from EmptySD3LatentImage or encode "
                     "with this model's VAE (the 16-channel Flux VAE)")


class FlowDenoiser:
    """``custom.Denoiser`` over a flow transformer: ``denoiser(x, sigma)`` is the guided x0 estimate."""

    def __new__(cls, model: Any, *args: Any, **kwargs: Any) -> "FlowDenoiser":
        if cls is FlowDenoiser:  # a family with its own denoiser (Qwen-Image, …): families.DENOISERS
            from ..families import DENOISERS, lookup

            family = lookup(DENOISERS, getattr(model, "family", ""))
            if family is not None:
                return super().__new__(family)
        return super().__new__(cls)

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None, noise: Any = None) -> None:
        self.transformer, self.dtype, self.device, self.fmt = model.unet, dtype, device, model.latent
        self.family, self.multiplier = getattr(model, "family", "flux"), float(model.flow.multiplier)
        self.flow = model.flow
        self.skip_layers: tuple[int, ...] = ()
        slg = getattr(model.flow, "skip_layer_guidance", ())
        #: (blocks, scale, sigma_start, sigma_end) of SkipLayerGuidanceSD3, or ()
        self.slg = (tuple(slg[0]), float(slg[1]), model.flow.percent_to_sigma(slg[2]),
                    model.flow.percent_to_sigma(slg[3])) if slg else ()
        self.conditioning, self.cfg = list(positive), float(cfg)
        self.conds, self.unconds = self._entries(positive, "positive"), (
            [] if self.cfg == 1.0 else self._entries(negative, "negative"))
        self.mask, self.clean, self.noise = mask, clean, noise
        #: CFGNorm patches on the MODEL, applied to the guided x0 (ComfyUI's post-cfg functions)
        self.norms = tuple(p for p in patches_of(model) if isinstance(p, CFGNorm))
        self.patches = patches_of(model)  # LatentApplyOperationCFG's pre-cfg functions
        #: SkipLayerGuidanceDiT(Simple) patches (block_skip), applied in split/__call__ below
        self.dit_slg = dit_slg_patches(self.patches, self.transformer, self.family)
        if self.dit_slg and type(self).__call__ is not FlowDenoiser.__call__:
            raise ValueError(f"SkipLayerGuidanceDiT/SkipLayerGuidanceDiTSimple are not wired for {self.family} models "
                             "yet; remove the node for this model")

    @property
    def noise_form(self) -> Any:
        """x = (1 - sigma) x0 + sigma * noise (ComfyUI's CONST), with this model's percent_to_sigma: the k-samplers'
        ancestral and SDE forms follow it."""
        from ..ksamplers.forms import RectifiedFlow

        settings = getattr(self, "flow", None)
        return RectifiedFlow() if settings is None else RectifiedFlow(settings.percent_to_sigma)

    def _entries(self, conditioning: list, what: str) -> list[tuple[Any, Any, float, list, float]]:
        require_conditioning(conditioning, what)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "Flux models")
            controls: tuple = ()
            if extras.get("control") is not None and self.family == "sd3":
                from .sd3_controlnet import prepare as prepare_controls

                controls = prepare_controls(extras["control"], self.flow, what, self.transformer)
            else:
                refuse_controls(extras, what, f"{self.family} transformers")
            pooled = extras.get("pooled_output")
            if pooled is None and self.family == "chroma":  # T5 only
                pooled = emb.new_zeros(1, 1)
            if pooled is None:
                raise ValueError(f"{what}: {self.family} models need the text encoders' pooled output; encode the "
                                 "prompt with this model's CLIP (DualCLIPLoader type flux for Flux, "
                                 "TripleCLIPLoader for SD3)")
            guidance = extras.get("guidance")
            refs = [(r.float() - self.fmt.shift_factor) * self.fmt.scaling_factor
                    for r in extras.get("reference_latents") or []]
            out.append((emb.to(self.device, self.dtype), pooled.to(self.device, self.dtype),
                        DEFAULT_GUIDANCE if guidance is None else float(guidance), refs,
                        float(extras.get("strength", 1.0)), extras.get("concat_latent_image"),
                        extras.get("concat_mask"), controls))
        return out

    def _concat(self, x: Any, image: Any, mask: Any) -> Any:
        """Flux Fill/Canny/Depth inputs beside the latent (ComfyUI's concat_cond): the scaled conditioning image
        latent, and for Fill the mask folded into 64 channels (8×8 pixels per latent cell)."""
        import torch
        import torch.nn.functional as F

        extra = int(self.transformer.config.in_channels) // 4 - x.shape[1]
        if extra <= 0:
            return x
        b, _, h, w = x.shape
        if image is None:
            image = torch.zeros_like(x)
        else:
            image = (image.float().to(x.device) - self.fmt.shift_factor) * self.fmt.scaling_factor
            if image.shape[-2:] != (h, w):
                image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
            image = _batch(image, b)
        parts = [x, image]
        if extra > image.shape[1]:  # an inpainting (Fill) model also takes the mask
            m = torch.ones(b, 1, h * 8, w * 8, device=x.device) if mask is None else \
                mask.float().to(x.device).reshape(-1, 1, *mask.shape[-2:])
            m = F.interpolate(m.mean(1, keepdim=True), size=(h * 8, w * 8), mode="bilinear", align_corners=False)
            m = m.view(m.shape[0], h, 8, w, 8).permute(0, 2, 4, 1, 3).reshape(m.shape[0], 64, h, w)
            parts.append(_batch(m, b))
        out = torch.cat(parts, dim=1)
        if out.shape[1] != extra + x.shape[1]:
            raise ValueError(f"this Flux model takes {extra} conditioning channels beside the latent; got "
                             f"{out.shape[1] - x.shape[1]} (connect InpaintModelConditioning for Fill models)")
        return out

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, pooled, guidance, refs, _, image, mask = entry[:7]
        b, c, h, w = x.shape
        if self.family == "sd3":
            from .sd3 import velocity

            return velocity(self.transformer, x, sigma, self.multiplier, _batch(emb, b), _batch(pooled, b),
                            self.dtype, self.skip_layers, entry[7] if len(entry) > 7 else ())
        if self.family == "chroma":
            from .chroma import velocity as chroma_velocity

            return chroma_velocity(self.transformer, x, sigma, _batch(emb, b), self.dtype)
        tokens = pack(pad_even(self._concat(x, image, mask))).to(self.dtype)
        ids = image_ids(h, w, device=x.device, dtype=self.dtype)
        count = tokens.shape[1]
        placed_h = placed_w = 0
        for ref in refs:  # Flux Kontext: reference latents as extra tokens, index 1 (ComfyUI's "offset" method)
            r = pad_even(ref.to(x.device)).repeat(b // ref.shape[0] if b % ref.shape[0] == 0 else 1, 1, 1, 1)
            tokens = torch.cat([tokens, pack(r).to(self.dtype)], dim=1)
            rh, rw = ref.shape[-2:]
            h_off, w_off = (0, placed_w) if rh + placed_h > rw + placed_w else (placed_h, 0)
            placed_h, placed_w = max(placed_h, rh + h_off), max(placed_w, rw + w_off)
            rid = image_ids(r.shape[-2], r.shape[-1], 1, x.device, self.dtype)
            rid[:, 1] += (h_off + 1) // 2
            rid[:, 2] += (w_off + 1) // 2
            ids = torch.cat([ids, rid])
        t = torch.full((b,), float(sigma), device=x.device, dtype=self.dtype)
        g = torch.full((b,), guidance, device=x.device, dtype=torch.float32) \
            if self.transformer.config.guidance_embeds else None
        out = self.transformer(hidden_states=tokens, timestep=t, guidance=g, pooled_projections=_batch(pooled, b),
                               encoder_hidden_states=_batch(emb, b), txt_ids=text_ids(emb.shape[1], x.device,
                                                                                         self.dtype),
                               img_ids=ids, return_dict=False)[0]
        return unpack(out[:, :count].float(), c, h, w)

    def _side(self, x: Any, sigma: float, entries: list) -> Any:
        if len(entries) == 1:
            return self._velocity(x, sigma, entries[0])
        total = sum(e[4] for e in entries) or 1.0
        return sum(self._velocity(x, sigma, e) * e[4] for e in entries) / total

    def _inpaint_in(self, x: Any, sigma: float) -> Any:
        if self.mask is None:
            return x
        return x * self.mask + (sigma * self.noise + (1.0 - sigma) * self.clean) * (1.0 - self.mask)

    def _inpaint_out(self, x0: Any) -> Any:
        return x0 if self.mask is None else x0 * self.mask + self.clean * (1.0 - self.mask)

    def split(self, x: Any, sigma: Any) -> tuple[Any, Any]:
        """(positive x0, negative x0 or None when cfg is 1) at noise level ``sigma``."""
        sigma = float(sigma)
        x = self._inpaint_in(x, sigma)
        pos = self._inpaint_out(x - sigma * self._side(x, sigma, self.conds))
        if not self.unconds:
            return pos, None
        double, single = negative_skips(self.dit_slg, self.flow, sigma)  # SkipLayerGuidanceDiTSimple
        with skipped_blocks(self.transformer, double, single) if double or single else contextlib.nullcontext():
            return pos, self._inpaint_out(x - sigma * self._side(x, sigma, self.unconds))

    def _cond_skipping(self, x: Any, sigma: float, double: tuple, single: tuple) -> Any:
        """The positive x0 with the ``double``/``single`` blocks skipped (SkipLayerGuidanceDiT)."""
        with skipped_blocks(self.transformer, double, single):
            return self._inpaint_out(x - sigma * self._side(self._inpaint_in(x, sigma), sigma, self.conds))

    def __call__(self, x: Any, sigma: Any) -> Any:
        cond, uncond = self.split(x, sigma)
        cond = pre_cfg(self.patches, cond, uncond)
        out = cond if uncond is None else uncond + self.cfg * (cond - uncond)
        if self.slg and self.slg[1] > 0 and self.slg[3] <= float(sigma) <= self.slg[2]:
            self.skip_layers = self.slg[0]  # SkipLayerGuidanceSD3: away from the prediction with blocks skipped
            try:
                skipped = self._inpaint_out(x - float(sigma) * self._side(self._inpaint_in(x, float(sigma)),
                                                                          float(sigma), self.conds))
            finally:
                self.skip_layers = ()
            out = out + (cond - skipped) * self.slg[1]
        if self.dit_slg:  # SkipLayerGuidanceDiT: away from the positive with blocks skipped
            out = dit_post_cfg(self.dit_slg, self.flow, float(sigma), cond, out,
                               lambda double, single: self._cond_skipping(x, float(sigma), double, single))
        for patch in self.norms:
            out = cfg_norm(cond, out, patch.strength)
        return out


def _batch(t: Any, batch: int) -> Any:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ValueError(f"a conditioning has a batch of {t.shape[0]}, which does not divide the latent batch of "
                         f"{batch}; use a batch of 1 or the same batch size")
    return t.repeat(batch // t.shape[0], *([1] * (t.dim() - 1)))


def sigmas_for(model: Any, opts: Any) -> Any:
    """The sigmas KSampler(Advanced) runs for ``opts`` on ``model`` (ComfyUI's denoise and step cuts)."""
    import numpy as np

    total, s0, s1 = opts.step_range()
    full = flow_sigmas(opts.scheduler, total, model.flow)
    keep_noise = s1 < total and opts.return_with_leftover_noise
    return full[s0:s1 + 1] if s1 >= total or keep_noise else np.append(full[s0:s1], 0.0)


def noise_mask_for(latent: dict[str, Any], samples: Any, device: Any) -> Any:
    """The LATENT's ``noise_mask`` resized to ``samples`` (batch and size) on ``device``; None without one."""
    from ..sampling import _resize_mask

    if latent.get("noise_mask") is None:
        return None
    return _resize_mask(latent["noise_mask"], samples.shape[0], *samples.shape[-2:]).to(device)


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """Denoise ``latent`` with a flow model (KSampler's contract, see ``sampling.sample``); returns the LATENT."""
    import torch

    from ..families import SAMPLERS, lookup

    own = lookup(SAMPLERS, model.family)  # a family with its own loop (Wan, LTX-Video, …): families.SAMPLERS
    if own is not None:
        return own(model, positive, negative, latent, opts, devices, callback, preview_every, lora_library, samplers)

    from ..preview import preview_jpeg
    from ..sampling import lora_applied, output_latent

    samples = prepare_latent(model, latent)
    fmt = model.latent
    out_latent = output_latent(latent, fmt.downscale)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return dict(out_latent, samples=samples)
    fn = sampler_fn(opts.sampler_name, samplers)
    sig = sigmas_for(model, opts)
    from ..noise import start_noise

    gen, noise = start_noise(opts, samples, latent)
    from ..controlnet import control_modules

    with control_modules(positive, negative) as controls, devices.use(model.unet, *controls), \
            lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean = ((samples - fmt.shift_factor) * fmt.scaling_factor).to(device)
        noise = noise.to(device)
        mask = noise_mask_for(latent, samples, device)
        denoiser = FlowDenoiser(model, positive, negative, opts.cfg, dtype, device, mask, clean, noise)
        s_first = float(sig[0])
        x = s_first * noise + (1.0 - s_first) * clean

        def step_done(step: int, count: int, x0: Any) -> None:
            if callback is None:
                return
            show = step % preview_every == 0 or step == count
            callback(step, count, preview_jpeg(x0 / fmt.scaling_factor + fmt.shift_factor, fmt) if show else None)

        x = fn(denoiser, x, torch.tensor(sig, dtype=torch.float32, device=device), generator=gen,
               callback=step_done)
        last = float(sig[-1])
        if mask is not None:
            x = x * mask + (last * noise + (1.0 - last) * clean) * (1.0 - mask)
        x = x / (1.0 - last) if last < 1.0 else x  # ComfyUI's inverse noise scaling (leftover noise)
        result = (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()
    return dict(out_latent, samples=result)


__all__ = ["DEFAULT_GUIDANCE", "FlowDenoiser", "euler", "noise_mask_for", "prepare_latent", "refuse_controls",
           "refuse_regions", "require_conditioning", "sample", "sampler_fn", "sigmas_for"]
