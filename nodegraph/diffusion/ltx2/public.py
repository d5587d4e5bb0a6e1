"""What the LTX-2 node pack uses (exported through ``nodegraph.api``'s ``[ltx2]`` block): loads through the engine's
ModelManager (keyed by the files' fingerprints and the dtype), audio decoding, and audio-video latent helpers."""

from __future__ import annotations

from typing import Any

#: Keys of an audio LATENT that LTXVConcatAVLatent moves under ``audio_*`` names of the audio-video LATENT.
AV_AUDIO_KEYS = {"samples": "audio_samples", "noise_mask": "audio_noise_mask"}


def _manager_and_dtype(ctx: Any) -> tuple[Any, Any]:
    from ..flow.public import _dtype, _manager

    manager = _manager(ctx)
    return manager, _dtype(manager)


def load_ltxav_text_encoder(ctx: Any, text_encoder: str, ckpt_name: str) -> Any:
    """A CLIP handle for LTXAVTextEncoderLoader: Gemma-3 (models/text_encoders) + the checkpoint's text connectors."""
    from nodegraph.models.manager import fingerprint

    from ..flow.public import split_model_path
    from ..loading import resolve_model
    from .text import load_ltxav_clip

    encoder = split_model_path(ctx.config, "text_encoders", text_encoder)
    checkpoint = resolve_model(ctx.config, "checkpoints", ckpt_name)
    for path in (encoder, checkpoint):
        ctx.models.check_loadable(path)
    manager, dtype = _manager_and_dtype(ctx)
    key = ("ltxav_text_encoder", fingerprint(encoder), fingerprint(checkpoint), str(dtype))
    return manager.load("text_encoders", encoder,
                        lambda: load_ltxav_clip(encoder, checkpoint, (text_encoder, ckpt_name), dtype),
                        name=f"{text_encoder} + {ckpt_name}", key=key, size=encoder.stat().st_size)


def load_audio_vae(ctx: Any, ckpt_name: str) -> Any:
    """A VAE handle for LTXVAudioVAELoader: the audio VAE and vocoder of an LTX-2 checkpoint."""
    from nodegraph.models.manager import fingerprint

    from ..loading import resolve_model
    from .audio import audio_vae_from_state
    from .files import read_tensors

    path = resolve_model(ctx.config, "checkpoints", ckpt_name)
    ctx.models.check_loadable(path)
    manager, dtype = _manager_and_dtype(ctx)
    key = ("ltx2_audio_vae", fingerprint(path), str(dtype))

    def load() -> Any:
        return audio_vae_from_state(read_tensors(path, ("audio_vae.", "vocoder.")), ckpt_name, dtype)

    return manager.load("vae", path, load, name=ckpt_name, key=key)


def audio_vae_of(loaded: Any, node: str) -> Any:
    """The ``LTX2AudioVAE`` of a loaded VAE value, or a clear error naming ``node``."""
    from .audio import LTX2AudioVAE

    if not isinstance(loaded.vae, LTX2AudioVAE):
        raise ValueError(f"{node}: this VAE is not LTX-2's audio VAE; load it with LTXVAudioVAELoader from the LTX-2 "
                         "checkpoint")
    return loaded.vae


def decode_audio(ctx: Any, vae: Any, latent: dict[str, Any]) -> dict[str, Any]:
    """AUDIO {waveform [B, 2, S], sample_rate} of an audio LATENT (or the audio of an audio-video one)."""
    import torch

    samples = latent.get("audio_samples", latent["samples"])
    with ctx.models.use(vae) as (loaded,):
        audio_vae = audio_vae_of(loaded, "LTXVAudioVAEDecode")
        if samples.dim() != 4 or samples.shape[1] != audio_vae.latent_channels:
            raise ValueError(f"LTXVAudioVAEDecode: samples are {tuple(samples.shape)}, not an LTX-2 audio latent "
                             f"[B, {audio_vae.latent_channels}, L, {audio_vae.latent_bins}]; connect the audio_latent "
                             "of LTXVSeparateAVLatent")
        with ctx.devices.use(audio_vae), torch.no_grad():
            param = next(audio_vae.parameters())
            wave = audio_vae.decode_audio(samples.to(param.device, param.dtype))
        return {"waveform": wave.float().cpu(), "sample_rate": audio_vae.output_sample_rate}


def encode_audio(ctx: Any, vae: Any, audio: Any) -> dict[str, Any]:
    """LTXVAudioVAEEncode: the normalised audio LATENT [B, 8, L, 16] of an AUDIO value."""
    import torch

    from nodegraph.media import check_audio

    waveform, rate = check_audio(audio, "LTXVAudioVAEEncode audio")
    with ctx.models.use(vae) as (loaded,):
        audio_vae = audio_vae_of(loaded, "LTXVAudioVAEEncode")
        with ctx.devices.use(audio_vae), torch.no_grad():
            latent = audio_vae.encode_audio(waveform, rate)
        return {"samples": latent.float().cpu(), "sample_rate": audio_vae.sample_rate, "type": "audio"}


def empty_audio_latent(ctx: Any, vae: Any, frames: int, frame_rate: int, batch_size: int) -> dict[str, Any]:
    """LTXVEmptyLatentAudio: zeros [B, 8, L, 16] for ``frames`` video frames at ``frame_rate``."""
    import torch

    with ctx.models.use(vae) as (loaded,):
        audio_vae = audio_vae_of(loaded, "LTXVEmptyLatentAudio")
        shape = (batch_size, audio_vae.latent_channels, audio_vae.latent_length(frames, frame_rate),
                 audio_vae.latent_bins)
        return {"samples": torch.zeros(shape), "sample_rate": audio_vae.sample_rate, "type": "audio"}


def img_to_video_inplace(ctx: Any, vae: Any, image: Any, latent: dict[str, Any], strength: float) -> dict[str, Any]:
    """LTXVImgToVideoInplace: ``latent``'s first frames replaced by the image's (resized to fit, bilinear, centre
    crop), kept by a noise mask of ``1 - strength``, as ComfyUI does."""
    import torch

    from nodegraph.imaging import resample

    samples = latent["samples"]
    if samples.dim() != 5:
        raise ValueError(f"LTXVImgToVideoInplace: latent is {tuple(samples.shape)}, not a video latent "
                         "[B, 128, T, h, w]; connect EmptyLTXVLatentVideo (before LTXVConcatAVLatent)")
    batch, channels, frames, height, width = samples.shape
    with ctx.models.use(vae) as (loaded,):
        scale = loaded.downscale
        if getattr(loaded.vae.config, "latent_channels", None) != channels:
            raise ValueError("LTXVImgToVideoInplace: this VAE's latents do not fit the video latent; connect the "
                             "VAE of the LTX checkpoint")
        pixels = image.movedim(-1, 1)
        if pixels.shape[2] != height * scale or pixels.shape[3] != width * scale:
            pixels = resample(pixels, width * scale, height * scale, "bilinear", "center")
        with ctx.devices.use(loaded.vae), torch.no_grad():
            param = next(loaded.vae.parameters())
            encoded = loaded.vae.encode(pixels[:, :3].to(param.device, param.dtype) * 2.0 - 1.0).latent_dist.mean
    encoded = encoded.float().cpu()
    out = samples.clone()
    count = min(encoded.shape[2], frames)
    out[:, :, :count] = encoded[:, :, :count]
    mask = torch.ones(batch, 1, frames, 1, 1)
    mask[:, :, :count] = 1.0 - strength
    return {"samples": out, "noise_mask": mask}


def concat_av(video: dict[str, Any], audio: dict[str, Any]) -> dict[str, Any]:
    """LTXVConcatAVLatent: one audio-video LATENT (video ``samples`` + ``audio_samples``, masks likewise)."""
    import torch

    for what, latent, dims in (("video_latent", video, 5), ("audio_latent", audio, 4)):
        if latent["samples"].dim() != dims:
            raise ValueError(f"LTXVConcatAVLatent: {what} is {tuple(latent['samples'].shape)}, not a "
                             f"{dims}-dimensional {'video' if dims == 5 else 'audio'} latent; connect "
                             f"{'EmptyLTXVLatentVideo' if dims == 5 else 'LTXVEmptyLatentAudio'}")
    out = {k: v for k, v in audio.items() if k not in AV_AUDIO_KEYS}
    out.update(video)
    out["audio_samples"] = audio["samples"]
    if video.get("noise_mask") is not None or audio.get("noise_mask") is not None:
        out["noise_mask"] = video.get("noise_mask", torch.ones(video["samples"].shape[0], 1,
                                                                video["samples"].shape[2], 1, 1))
        out["audio_noise_mask"] = audio.get("noise_mask", torch.ones_like(audio["samples"]))
    return out


def separate_av(latent: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """LTXVSeparateAVLatent: (video LATENT, audio LATENT) of an audio-video LATENT."""
    if latent.get("audio_samples") is None:
        raise ValueError("LTXVSeparateAVLatent: av_latent holds no audio; connect the LATENT of a sampler that "
                         "sampled LTXVConcatAVLatent's output")
    video = {k: v for k, v in latent.items() if k not in ("audio_samples", "audio_noise_mask")}
    audio = {k: v for k, v in latent.items() if k not in ("audio_samples", "audio_noise_mask", "samples",
                                                          "noise_mask", "downscale", "batch_index")}
    audio["samples"] = latent["audio_samples"]
    audio["type"] = "audio"
    if latent.get("audio_noise_mask") is not None:
        audio["noise_mask"] = latent["audio_noise_mask"]
    return video, audio


__all__ = ["audio_vae_of", "concat_av", "decode_audio", "empty_audio_latent", "encode_audio", "img_to_video_inplace",
           "load_audio_vae",
           "load_ltxav_text_encoder", "separate_av"]
