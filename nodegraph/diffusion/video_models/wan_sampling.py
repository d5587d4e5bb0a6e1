"""KSampler / KSamplerAdvanced on a Wan model (``family == "wan"``), ComfyUI's semantics in the k-diffusion convention.

- Noise levels: the model's ``FlowSettings`` ("discrete", shift 8 unless ModelSamplingSD3 sets another) through
  ``flow.schedule.flow_sigmas``; denoise and start/end steps cut as for Flux (``flow.sampling.sigmas_for``), so two
  KSamplerAdvanced over step ranges drive Wan 2.2's two experts (high noise, then low noise) as in ComfyUI.
- Latents: video LATENTs ``[B, 16, T, h, w]`` (EmptyHunyuanLatentVideo); the transformer sees
  ``(z - mean) / std`` per channel, as ComfyUI's Wan21 latent format and ``WanPipeline``.
- The transformer gets the timestep ``sigma · 1000`` and the UMT5 states; it predicts the velocity, x0 = x - sigma · v;
  cfg mixes the positive and negative predictions. I2V models (36 input channels) take the entry's
  ``concat_latent_image`` and ``concat_mask`` (WanImageToVideo) beside the latent.
- Wan 2.2 TI2V-5B (48 channels) takes per-token timesteps and keeps the frames its latent's noise mask keeps
  (``wan22``: Wan22ImageToVideoLatent's start frame).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..block_skip import negative_skips, post_cfg, skipped_blocks
from ..flow.sampling import refuse_regions, require_conditioning


def prepare_video_latent(model: Any, latent: dict[str, Any]) -> Any:
    """The raw video samples [B, C, T, h, w] float32, checked against the model's latent channels."""
    samples = latent["samples"]
    channels = model.latent.channels
    if samples.dim() != 5 or samples.shape[1] != channels:
        raise ValueError(f"latent_image is {tuple(samples.shape)} but {model.source} ({model.arch}) samples video "
                         f"latents [B, {channels}, T, h, w]; start from EmptyHunyuanLatentVideo or encode frames "
                         "with the Wan VAE")
    return samples.float()


class WanDenoiser:
    """``denoiser(x, sigma)``: the guided x0 estimate of a Wan transformer on normalised latents."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None) -> None:
        from .wan22 import expands_timesteps

        self.transformer, self.flow, self.dtype, self.device = model.unet, model.flow, dtype, device
        from ..ksamplers.forms import rectified_flow_of

        self.noise_form = rectified_flow_of(model)  # the ancestral/SDE samplers' rectified-flow forms
        self.cfg = float(cfg)
        # Wan 2.2 TI2V-5B: per-token timesteps; frames where ``mask`` is 0 stay ``clean`` (normalised latents)
        self.expand, self.mask, self.clean = expands_timesteps(model), mask, clean
        self.mean, self.std = None, None
        self.conds = self._entries(positive, "positive")
        self.unconds = [] if self.cfg == 1.0 else self._entries(negative, "negative")
        from ..block_skip import dit_slg_patches
        from ..patches import patches_of

        #: SkipLayerGuidanceDiT(Simple) patches (block_skip), applied in split/__call__ below
        self.dit_slg = dit_slg_patches(patches_of(model), self.transformer, "wan")

    def _entries(self, conditioning: list, what: str) -> list[tuple[Any, float, Any, Any]]:
        from .wan_vae import latent_stats

        require_conditioning(conditioning, what)
        extra = int(self.transformer.config.in_channels) - int(self.transformer.config.out_channels)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "Wan models")
            concat = None
            if extra > 0:
                image = extras.get("concat_latent_image")
                if image is None:
                    raise ValueError(f"{what}: this Wan image-to-video model needs a start image; connect "
                                     "WanImageToVideo between the prompts and the sampler")
                mean, std = latent_stats(image.shape[1])
                image = (image.float() - mean) / std
                mask = extras.get("concat_mask")
                # the model sees 1 where a frame is given (ComfyUI's 1 - concat_mask; zeros without a mask); a
                # 4-channel mask (one per pixel frame, WanFirstLastFrameToVideo) is kept, others are averaged
                if mask is None:
                    mask = image.new_zeros(1, 1, *image.shape[2:])
                else:
                    mask = mask.float()
                    mask = 1.0 - (mask if mask.shape[1] == 4 else mask.mean(dim=1, keepdim=True))
                concat = (image, mask.expand(image.shape[0], mask.shape[1], *image.shape[2:]))
            image_states = None
            if self.transformer.config.image_dim:
                vision = extras.get("clip_vision_output")
                if vision is None:
                    raise ValueError(f"{what}: this Wan 2.1 image-to-video model needs the start image's CLIP vision "
                                     "output; connect CLIPVisionEncode (crop none) to WanImageToVideo")
                image_states = vision.penultimate_hidden_states.to(self.device, self.dtype)
                pairs = self.transformer.config.get("pos_embed_seq_len")
                if pairs:  # FLF2V: both images' states one after the other; diffusers takes them as a batch of 2
                    if image_states.shape[1] != pairs:
                        raise ValueError(f"{what}: this Wan first-last-frame model needs the CLIP vision outputs of "
                                         f"both images ({pairs} tokens, not {image_states.shape[1]}); connect "
                                         "clip_vision_start_image and clip_vision_end_image of "
                                         "WanFirstLastFrameToVideo")
                    image_states = image_states.reshape(-1, pairs // 2, image_states.shape[-1])
            out.append((emb.to(self.device, self.dtype), float(extras.get("strength", 1.0)), concat, image_states,
                        self._vace(extras, what)))
        return out

    def _vace(self, extras: dict, what: str) -> Any:
        """(normalised control frames + mask [1, 96, T, h, w], strength) of WanVaceToVideo, None without it."""
        import torch

        from .wan_vae import latent_stats

        if "vace_layers" not in self.transformer.config or not extras.get("vace_frames"):
            return None
        frames, masks = extras["vace_frames"], extras.get("vace_mask") or [None]
        if len(frames) > 1:
            raise ValueError(f"{what}: {len(frames)} WanVaceToVideo controls on one conditioning; this version "
                             "takes one (use a single WanVaceToVideo per prompt)")
        video = frames[0].float()
        mean, std = latent_stats(16)
        video = torch.cat([(video[:, i:i + 16] - mean) / std for i in range(0, video.shape[1], 16)], dim=1)
        mask = masks[0] if masks[0] is not None else video.new_ones(video.shape[0], 64, *video.shape[2:])
        strength = float((extras.get("vace_strength") or [1.0])[0])
        return torch.cat([video, mask.float()], dim=1).to(self.device, self.dtype), strength

    def _control(self, x: Any, control: Any) -> dict[str, Any]:
        """The VACE transformer's control inputs (ComfyUI's zero frames and full mask without WanVaceToVideo)."""
        import torch

        from .wan_vae import latent_stats

        layers = self.transformer.config.get("vace_layers")
        if not layers:
            return {}
        if control is None:
            mean, std = latent_stats(16)
            empty = (-mean / std).to(x.device).expand(x.shape[0], 16, *x.shape[2:])
            control = (torch.cat([empty, empty, torch.ones_like(x[:, :1]).expand(-1, 64, -1, -1, -1)], dim=1), 1.0)
        states, strength = control
        if states.shape[0] != x.shape[0]:
            states = states.repeat(x.shape[0] // states.shape[0], 1, 1, 1, 1)
        return {"control_hidden_states": states.to(x.device, self.dtype),
                "control_hidden_states_scale": torch.full((len(layers),), strength, device=x.device)}

    def _inputs(self, x: Any, concat: Any) -> Any:
        import torch

        if concat is None:
            return x
        image, mask = concat
        mask = mask.to(x.device)
        mask = mask.repeat(1, 4, 1, 1, 1) if mask.shape[1] == 1 else mask
        if image.shape[0] != x.shape[0]:
            image, mask = image.repeat(x.shape[0], 1, 1, 1, 1), mask.repeat(x.shape[0], 1, 1, 1, 1)
        return torch.cat([x, mask, image.to(x.device)], dim=1)

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, _, concat, image_states, control = entry
        b = x.shape[0]
        if emb.shape[0] != b:
            if b % emb.shape[0]:
                raise ValueError(f"a conditioning has a batch of {emb.shape[0]}, which does not divide the latent "
                                 f"batch of {b}; use a batch of 1 or the same batch size")
            emb = emb.repeat(b // emb.shape[0], 1, 1)
        if self.expand:
            from .wan22 import token_timesteps

            t = token_timesteps(self.flow.timestep(sigma), x, self.mask, tuple(self.transformer.config.patch_size))
        else:
            t = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=torch.float32)
        out = self.transformer(hidden_states=self._inputs(x, concat).to(self.dtype), timestep=t,
                               encoder_hidden_states=emb, encoder_hidden_states_image=image_states,
                               return_dict=False, **self._control(x, control))[0]
        return out.float()

    def _side(self, x: Any, sigma: float, entries: list) -> Any:
        if len(entries) == 1:
            return self._velocity(x, sigma, entries[0])
        total = sum(e[1] for e in entries) or 1.0
        return sum(self._velocity(x, sigma, e) * e[1] for e in entries) / total

    def split(self, x: Any, sigma: Any) -> tuple[Any, Any]:
        """(positive x0, negative x0 or None when cfg is 1) at noise level ``sigma``."""
        from .wan22 import keep_frames

        sigma = float(sigma)
        x = keep_frames(x, self.clean, self.mask)
        pos = keep_frames(x - sigma * self._side(x, sigma, self.conds), self.clean, self.mask)
        if not self.unconds:
            return pos, None
        double, single = negative_skips(self.dit_slg, self.flow, sigma)  # SkipLayerGuidanceDiTSimple
        with skipped_blocks(self.transformer, double, single) if double or single else contextlib.nullcontext():
            return pos, keep_frames(x - sigma * self._side(x, sigma, self.unconds), self.clean, self.mask)

    def _cond_skipping(self, x: Any, sigma: float, double: tuple, single: tuple) -> Any:
        """The positive x0 with the ``double``/``single`` blocks skipped (SkipLayerGuidanceDiT)."""
        from .wan22 import keep_frames

        x = keep_frames(x, self.clean, self.mask)
        with skipped_blocks(self.transformer, double, single):
            return keep_frames(x - sigma * self._side(x, sigma, self.conds), self.clean, self.mask)

    def __call__(self, x: Any, sigma: Any) -> Any:
        cond, uncond = self.split(x, sigma)
        out = cond if uncond is None else uncond + self.cfg * (cond - uncond)
        if self.dit_slg:  # SkipLayerGuidanceDiT: away from the positive with blocks skipped
            out = post_cfg(self.dit_slg, self.flow, float(sigma), cond, out,
                           lambda double, single: self._cond_skipping(x, float(sigma), double, single))
        return out


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """Denoise a video ``latent`` with a Wan model (KSampler's contract, see ``sampling.sample``); the LATENT."""
    import torch

    from ..flow.sampling import sampler_fn, sigmas_for
    from ..noise import start_noise
    from ..preview import preview_jpeg
    from ..sampling import lora_applied, output_latent
    from .wan22 import denoise_mask
    from .wan_vae import latent_stats

    samples = prepare_video_latent(model, latent)
    mask = denoise_mask(model, latent, samples)
    out_latent = output_latent(latent, model.latent.downscale)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return dict(out_latent, samples=samples)
    fn = sampler_fn(opts.sampler_name, samplers)
    sig = sigmas_for(model, opts)
    gen, noise = start_noise(opts, samples, latent)
    mean, std = latent_stats(samples.shape[1])
    with devices.use(model.unet), lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        mean, std = mean.to(device), std.to(device)
        clean = ((samples.to(device) - mean) / std)
        noise = noise.to(device)
        mask = None if mask is None else mask.to(device)
        denoiser = WanDenoiser(model, positive, negative, opts.cfg, dtype, device, mask=mask, clean=clean)
        first = float(sig[0])
        x = first * noise + (1.0 - first) * clean

        def step_done(step: int, count: int, x0: Any) -> None:
            if callback is None:
                return
            show = step % preview_every == 0 or step == count
            frame = (x0[:, :, 0] * std[:, :, 0] + mean[:, :, 0]).float().cpu()
            callback(step, count, preview_jpeg(frame, model.latent) if show else None)

        x = fn(denoiser, x, torch.tensor(sig, dtype=torch.float32, device=device), generator=gen,
               callback=step_done)
        last = float(sig[-1])
        x = x / (1.0 - last) if last < 1.0 else x  # ComfyUI's inverse noise scaling (leftover noise)
        result = (x.float() * std + mean).cpu()
    return dict(out_latent, samples=result)


__all__ = ["WanDenoiser", "prepare_video_latent", "sample"]
