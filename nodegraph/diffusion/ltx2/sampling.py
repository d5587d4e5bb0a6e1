"""Sampling an LTX-2 model (``family == "ltx2"``): video and audio denoised together (KSampler, SamplerCustom*).

- Latents: an audio-video LATENT (LTXVConcatAVLatent) holds the video ``samples`` [B, 128, T, h, w] and the
  ``audio_samples`` [B, 8, L, 16], both normalised. The samplers see one flat tensor [B, N_video + N_audio] (any
  ComfyUI sampler works unchanged); the denoiser splits it, runs the transformer on the video tokens [B, T·h·w, 128]
  and the audio tokens [B, L, 8·16] at once, and joins the two x0 estimates again.
- The transformer gets the timestep ``sigma · 1000`` (a video ``noise_mask`` gives kept frames sigma · mask, as
  ``LTX2ImageToVideoPipeline`` does; the audio-video cross-attention keeps the unmasked sigma), the
  connector states of the prompt (video half and audio half of the CONDITIONING's width, LTXAVTextEncoderLoader),
  rotary positions at the entry's ``frame_rate`` (LTXVConditioning; 25 without it); it predicts both velocities,
  x0 = x - sigma · v, and cfg mixes positive and negative x0 of each modality, as ``LTX2Pipeline`` does.
- Noise levels: LTX-Video's (``ltx.sampling``): KSampler's from the model's FlowSettings, SamplerCustom's from
  LTXVScheduler (``ltx_sigmas``). Noise: the video's draw, then the audio's, from one generator (ComfyUI's order).
"""

from __future__ import annotations

from typing import Any

from ..ltx.sampling import DEFAULT_FRAME_RATE, SPATIAL, _mask, prepare_video_latent

_REGION_KEYS = ("area", "mask", "start_percent", "end_percent")


def split_av(latent: dict[str, Any], model: Any) -> tuple[Any, Any]:
    """(video [B, 128, T, h, w], audio [B, C, L, M]) float32 of an audio-video LATENT, checked against the model."""
    audio = latent.get("audio_samples")
    if audio is None:
        raise ValueError(f"{model.source} (LTX-2) denoises video and audio together, but this latent holds only "
                         f"{tuple(latent['samples'].shape)}; join EmptyLTXVLatentVideo and LTXVEmptyLatentAudio with "
                         "LTXVConcatAVLatent and sample that")
    video = prepare_video_latent(model, latent)
    audio_mask = latent.get("audio_noise_mask")
    if audio_mask is not None and bool((audio_mask != 1).any()):
        raise ValueError("a noise mask on the audio latent (keeping given audio) is not supported for LTX-2 yet; "
                         "remove the audio latent's SetLatentNoiseMask")
    cfg = model.unet.config
    if audio.dim() != 4 or audio.shape[1] * audio.shape[3] != int(cfg.audio_in_channels) \
            or audio.shape[0] != video.shape[0]:
        raise ValueError(f"the audio latent is {tuple(audio.shape)}, which {model.source} does not read (it takes "
                         f"[B, C, L, M] with C·M = {cfg.audio_in_channels} and the video's batch); make it with "
                         "LTXVEmptyLatentAudio from the LTX-2 audio VAE")
    return video, audio.float()


def pack(video: Any, audio: Any) -> Any:
    """One flat tensor [B, N_video + N_audio] of a video and an audio latent."""
    import torch

    return torch.cat([video.flatten(1), audio.flatten(1)], dim=1)


def unpack(x: Any, video_shape: tuple, audio_shape: tuple) -> tuple[Any, Any]:
    """(video, audio) of a flat tensor made by ``pack``."""
    n = 1
    for s in video_shape[1:]:
        n *= int(s)
    return x[:, :n].reshape(x.shape[0], *video_shape[1:]), x[:, n:].reshape(x.shape[0], *audio_shape[1:])


class LTX2Denoiser:
    """``denoiser(x, sigma)``: the guided x0 estimate of an LTX-2 transformer on a packed audio-video tensor."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 video_shape: tuple, audio_shape: tuple, mask: Any = None, clean: Any = None) -> None:
        self.transformer, self.dtype, self.device = model.unet, dtype, device
        from ..ksamplers.forms import rectified_flow_of

        self.noise_form = rectified_flow_of(model)  # the ancestral/SDE samplers' rectified-flow forms
        self.cfg = float(cfg)
        self.video_shape, self.audio_shape = tuple(video_shape), tuple(audio_shape)
        self.mask, self.clean = mask, clean  # video noise mask [B, 1, T, 1, 1] and clean video latent
        self.conds = self._entries(positive, "positive")
        self.unconds = [] if self.cfg == 1.0 else self._entries(negative, "negative")

    def _entries(self, conditioning: list, what: str) -> list[tuple[Any, Any, Any, float, float]]:
        import torch

        if not conditioning:
            raise ValueError(f"{what} is an empty conditioning list; connect a CLIPTextEncode output")
        width = int(self.transformer.config.caption_channels)
        out = []
        for emb, extras in conditioning:
            if any(extras.get(k) is not None for k in _REGION_KEYS) or extras.get("keyframe_idxs") is not None:
                raise ValueError(f"{what}: area, mask, timestep-range and guide (LTXVAddGuide) conditioning do not "
                                 "apply to LTX-2 models here yet; remove those nodes")
            if emb.shape[-1] != 2 * width:
                raise ValueError(f"{what}: the text states are {emb.shape[-1]} wide but this LTX-2 model reads "
                                 f"{2 * width} (video + audio connector states); encode the prompt with the CLIP of "
                                 "LTXAVTextEncoderLoader")
            mask = extras.get("attention_mask")
            mask = torch.ones(emb.shape[:2], dtype=torch.long) if mask is None else mask
            emb = emb.to(self.device, self.dtype)
            out.append((emb[..., :width], emb[..., width:], mask.to(self.device), float(extras.get("strength", 1.0)),
                        float(extras.get("frame_rate", DEFAULT_FRAME_RATE))))
        return out

    def _velocity(self, video: Any, audio: Any, sigma: float, entry: tuple) -> tuple[Any, Any]:
        import torch

        emb_v, emb_a, mask, _, frame_rate = entry
        b, _, t, h, w = video.shape
        if emb_v.shape[0] != b:
            if b % emb_v.shape[0]:
                raise ValueError(f"a conditioning has a batch of {emb_v.shape[0]}, which does not divide the latent "
                                 f"batch of {b}; use a batch of 1 or the same batch size")
            reps = b // emb_v.shape[0]
            emb_v, emb_a, mask = emb_v.repeat(reps, 1, 1), emb_a.repeat(reps, 1, 1), mask.repeat(reps, 1)
        tokens = video.flatten(2).transpose(1, 2)
        audio_tokens = audio.transpose(1, 2).flatten(2)
        timestep = torch.full((b,), sigma * 1000.0, device=video.device, dtype=torch.float32)
        video_timestep = timestep
        if self.mask is not None:  # kept frames see a lower noise level (sigma · mask), per token
            keep = self.mask.expand(b, 1, t, h, w).flatten(2).transpose(1, 2)[..., 0]
            video_timestep = sigma * 1000.0 * keep.float()
        rate = frame_rate if frame_rate > 0 else DEFAULT_FRAME_RATE
        out_v, out_a = self.transformer(
            hidden_states=tokens.to(self.dtype), audio_hidden_states=audio_tokens.to(self.dtype),
            encoder_hidden_states=emb_v, audio_encoder_hidden_states=emb_a, timestep=video_timestep,
            audio_timestep=timestep, sigma=timestep, audio_sigma=timestep, encoder_attention_mask=mask,
            audio_encoder_attention_mask=mask, num_frames=t, height=h, width=w, fps=rate,
            audio_num_frames=audio.shape[2], return_dict=False)
        out_v = out_v.float().transpose(1, 2).reshape(video.shape)
        out_a = out_a.float().reshape(b, audio.shape[2], audio.shape[1], audio.shape[3]).transpose(1, 2)
        return out_v, out_a

    def _side(self, x: Any, sigma: float, entries: list) -> Any:
        video, audio = unpack(x, self.video_shape, self.audio_shape)
        total = sum(e[3] for e in entries) or 1.0
        v_sum = a_sum = 0.0
        for entry in entries:
            v, a = self._velocity(video, audio, sigma, entry)
            weight = entry[3] / total if len(entries) > 1 else 1.0
            v_sum, a_sum = v_sum + v * weight, a_sum + a * weight
        return x - sigma * pack(v_sum, a_sum)

    def __call__(self, x: Any, sigma: Any) -> Any:
        sigma = float(sigma)
        out = self._side(x, sigma, self.conds)
        if self.unconds:
            uncond = self._side(x, sigma, self.unconds)
            out = uncond + self.cfg * (out - uncond)
        if self.mask is not None:
            video, audio = unpack(out, self.video_shape, self.audio_shape)
            video = video * self.mask + self.clean * (1.0 - self.mask)
            out = pack(video, audio)
        return out


def _run(model: Any, positive: list, negative: list, cfg: float, video: Any, audio: Any, noise: tuple, sig: Any,
         fn: Any, gen: Any, mask: Any, devices: Any, callback: Any, lora_library: Any) -> tuple[tuple, Any]:
    """((video, audio), last x0 pair or None): ``fn`` from sigma[0] to sigma[-1] on the packed latent."""
    import torch

    from ..sampling import lora_applied

    last: dict[str, Any] = {}
    with devices.use(model.unet), lora_applied(model, lora_library), torch.no_grad():
        device, dtype = devices.device, devices.dtype
        clean_v = video.to(device)
        clean = pack(clean_v, audio.to(device))
        start = pack(noise[0].to(device), noise[1].to(device))
        mask = None if mask is None else mask.to(device)
        denoiser = LTX2Denoiser(model, positive, negative, cfg, dtype, device, video.shape, audio.shape, mask,
                                clean_v)
        first = float(sig[0])
        x = first * start + (1.0 - first) * clean
        if mask is not None:
            xv, xa = unpack(x, video.shape, audio.shape)
            x = pack(xv * mask + clean_v * (1.0 - mask), xa)

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                callback(step, count, None)  # no latent preview for audio-video latents yet

        if len(sig) > 1:
            x = fn(denoiser, x, torch.as_tensor(sig, dtype=torch.float32).to(device), generator=gen,
                   callback=step_done)
        end = float(sig[-1])
        if mask is not None:
            xv, xa = unpack(x, video.shape, audio.shape)
            nv, _ = unpack(start, video.shape, audio.shape)
            x = pack(xv * mask + (end * nv + (1.0 - end) * clean_v) * (1.0 - mask), xa)
        x = x / (1.0 - end) if end < 1.0 else x
        x0 = last.get("x0")
        result = unpack(x.float().cpu(), video.shape, audio.shape)
        return result, None if x0 is None else unpack(x0.float().cpu(), video.shape, audio.shape)


def _out(latent: dict[str, Any], pair: tuple) -> dict[str, Any]:
    from ..sampling import output_latent

    return dict(output_latent(latent, SPATIAL), samples=pair[0], audio_samples=pair[1])


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """Denoise an audio-video ``latent`` with an LTX-2 model (KSampler's contract, see ``sampling.sample``)."""
    import torch

    from ..flow.sampling import sampler_fn, sigmas_for
    from ..sampling import make_noise

    video, audio = split_av(latent, model)
    total, s0, s1 = opts.step_range()
    if s0 >= s1 or s0 >= total:
        return _out(latent, (video, audio))
    gen = torch.Generator("cpu").manual_seed(int(opts.seed))
    if opts.add_noise:
        noise = (make_noise(tuple(video.shape), gen, latent.get("batch_index")),
                 make_noise(tuple(audio.shape), gen, latent.get("batch_index")))
    else:
        noise = (torch.zeros_like(video), torch.zeros_like(audio))
    result, _ = _run(model, positive, negative, opts.cfg, video, audio, noise, sigmas_for(model, opts),
                     sampler_fn(opts.sampler_name, samplers), gen, _mask(latent, video), devices, callback,
                     lora_library)
    return _out(latent, result)


def draw_av_noise(source: Any, latent: dict[str, Any], video: Any, audio: Any) -> tuple[tuple, Any]:
    """((video noise, audio noise), step-noise generator) from a NOISE value: the video's draw, then the audio's."""
    import torch

    from ..guiders import RandomNoise, draw_noise, seeded_generator

    if isinstance(source, RandomNoise):
        gen = seeded_generator(source.seed)
        first = source.generate_noise(dict(latent, samples=video), gen)
        return (first, source.generate_noise(dict(latent, samples=audio), gen)), gen
    start, gen = draw_noise(source, dict(latent, samples=video))
    return (start, torch.zeros_like(audio) if not start.any() else
            source.generate_noise(dict(latent, samples=audio)).float().cpu()), gen


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustom(Advanced) on an LTX-2 model: (output, denoised_output) audio-video LATENTs."""
    import torch

    from ..flow.custom import _conditionings

    model = model if model is not None else guider.model
    positive, negative, cfg = _conditionings(guider)
    video, audio = split_av(latent, model)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = _out(latent, (video, audio))
        return done, done
    start, gen = draw_av_noise(noise, latent, video, audio)
    result, x0 = _run(model, positive, negative, cfg, video, audio, start, sig, sampler, gen, _mask(latent, video),
                      devices, callback, lora_library)
    done = _out(latent, result)
    return done, (_out(latent, x0) if x0 is not None else done)


__all__ = ["LTX2Denoiser", "draw_av_noise", "pack", "sample", "sample_custom", "split_av", "unpack"]
