"""Wan video models: the empty video latent, trimming video latents and image-to-video conditioning (ComfyUI names).

A video LATENT is ``[B, 16, T, h, w]``: ``T = (frames - 1) // 4 + 1`` latent frames of ``h = height / 8`` by
``w = width / 8`` cells (the Wan 2.1 VAE's compression). Load the model with UNETLoader, the UMT5 text encoder with
CLIPLoader type ``wan`` and the VAE with VAELoader; KSampler samples it and VAEDecode returns the frames.

Wan 2.2 TI2V-5B works in the Wan 2.2 VAE's space: ``[B, 48, T, height / 16, width / 16]`` latents from
Wan22ImageToVideoLatent, whose optional start image becomes the first latent frame, kept by the latent's noise mask.
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import ClipVisionOutput, Float, Int, Link, Node, Output, hookimpl, resample

MAX_RESOLUTION = 16384
LATENT_CHANNELS = 16
TEMPORAL = 4
SPATIAL = 8
#: Wan 2.2 TI2V-5B's latent space (the Wan 2.2 VAE): 48 channels, 16 pixels per cell.
LATENT_CHANNELS_22 = 48
SPATIAL_22 = 16


def _frames(length: int) -> int:
    """Latent frames of a video of ``length`` frames (the first frame alone, then 4 per latent frame)."""
    return (length - 1) // TEMPORAL + 1


def _with_extras(conditioning: list, **values: Any) -> list:
    """A copy of ``conditioning`` with ``values`` set in every entry's extras (tensors shared)."""
    return [(emb, dict(extras, **values)) for emb, extras in conditioning]


class EmptyHunyuanLatentVideo(Node):
    """An empty video latent (HunyuanVideo 1.0 and Wan 2.1: 16 channels, 8× spatial and 4× temporal compression)."""

    DISPLAY_NAME = "Empty HunyuanVideo 1.0 Latent"
    CATEGORY = "latent/video"
    INPUTS = {"width": Int(848, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(480, min=16, max=MAX_RESOLUTION, step=16),
              "length": Int(25, min=1, max=MAX_RESOLUTION, step=4),
              "batch_size": Int(1, min=1, max=4096)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, length: int, batch_size: int = 1):
        import torch

        samples = torch.zeros(batch_size, LATENT_CHANNELS, _frames(length), height // SPATIAL, width // SPATIAL)
        return ({"samples": samples, "downscale": SPATIAL},)


class TrimVideoLatent(Node):
    """Drop the first ``trim_amount`` latent frames of a video latent."""

    DISPLAY_NAME = "TrimVideoLatent"
    CATEGORY = "latent/video"
    INPUTS = {"samples": Link("LATENT"), "trim_amount": Int(0, min=0, max=99999)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, trim_amount: int):
        z = samples["samples"]
        if z.dim() != 5:
            raise ValueError(f"TrimVideoLatent: samples is an image latent {tuple(z.shape)}, not a video latent "
                             "[B, C, T, h, w]; connect a video latent (EmptyHunyuanLatentVideo, a video KSampler)")
        return (dict(samples, samples=z[:, :, trim_amount:]),)


#: The video size inputs of Wan's conditioning nodes (ComfyUI's defaults: 832×480, 81 frames).
_WAN_SIZE = {"width": Int(832, min=16, max=MAX_RESOLUTION, step=16),
             "height": Int(480, min=16, max=MAX_RESOLUTION, step=16),
             "length": Int(81, min=1, max=MAX_RESOLUTION, step=4),
             "batch_size": Int(1, min=1, max=4096)}


class WanImageToVideo(Node):
    """Condition a Wan image-to-video model on a start image (and its CLIP vision output for Wan 2.1 I2V)."""

    DISPLAY_NAME = "WanImageToVideo"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              **_WAN_SIZE,
              "clip_vision_output": Link("CLIP_VISION_OUTPUT", optional=True),
              "start_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                batch_size: int, clip_vision_output: Any = None, start_image: Any = None):
        import torch

        frames = _frames(length)
        latent = torch.zeros(batch_size, LATENT_CHANNELS, frames, height // SPATIAL, width // SPATIAL)
        if start_image is not None:
            start = resample(start_image[:length].movedim(-1, 1), width, height, "bilinear", "center")
            video = torch.full((length, 3, height, width), 0.5)
            video[:start.shape[0]] = start[:, :3]
            image = _encode_clip(ctx, vae, video, "WanImageToVideo")[0]
            mask = torch.ones(1, 1, frames, image.shape[-2], image.shape[-1])
            mask[:, :, :_frames(start.shape[0])] = 0.0
            positive = _with_extras(positive, concat_latent_image=image, concat_mask=mask)
            negative = _with_extras(negative, concat_latent_image=image, concat_mask=mask)
        if clip_vision_output is not None:
            positive = _with_extras(positive, clip_vision_output=clip_vision_output)
            negative = _with_extras(negative, clip_vision_output=clip_vision_output)
        return (positive, negative, {"samples": latent, "downscale": SPATIAL})


def encode_pixels(ctx: Any, inner: Any, video: Any) -> Any:
    """Raw latent ``[1, C, T, h, w]`` of frames ``[N, 3, H, W]`` in 0..1 through a video VAE's ``encode_video``."""
    import torch

    with ctx.devices.use(inner), torch.no_grad():
        param = next(inner.parameters())
        return inner.encode_video(video.to(param.device, param.dtype) * 2.0 - 1.0).float().cpu()


def _encode_clip(ctx: Any, vae: Any, video: Any, node: str) -> tuple[Any, int, int, Any]:
    """(raw latent ``[1, C, T, h, w]`` of frames ``[N, 3, H, W]`` in 0..1, latent channels, pixels per cell, the
    latent mean ``[1, C, 1, 1, 1]``)."""
    with ctx.models.use(vae) as (loaded,):
        if not hasattr(loaded.vae, "encode_video"):
            raise ValueError(f"{node}: this VAE is not a Wan video VAE; load wan_2.1_vae (or wan2.2_vae for the "
                             "5B model) with VAELoader")
        image = encode_pixels(ctx, loaded.vae, video)
        mean = loaded.vae.latents_mean.float().cpu().view(1, -1, 1, 1, 1)
        return image, int(loaded.vae.config.latent_channels), int(loaded.downscale), mean


class WanFirstLastFrameToVideo(Node):
    """Condition a Wan image-to-video model on a first and/or last frame (Wan 2.1 FLF2V: with both images'
    CLIP vision outputs)."""

    DISPLAY_NAME = "WanFirstLastFrameToVideo"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              **_WAN_SIZE,
              "clip_vision_start_image": Link("CLIP_VISION_OUTPUT", optional=True),
              "clip_vision_end_image": Link("CLIP_VISION_OUTPUT", optional=True),
              "start_image": Link("IMAGE", optional=True), "end_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                batch_size: int, clip_vision_start_image: Any = None, clip_vision_end_image: Any = None,
                start_image: Any = None, end_image: Any = None):
        import torch

        frames = _frames(length)
        video = torch.full((length, 3, height, width), 0.5)
        # one mask entry per pixel frame, the first frame padded to 4 (0 = given, as ComfyUI's concat_mask)
        keep = torch.ones(frames * TEMPORAL)
        if start_image is not None:
            start = resample(start_image[:length].movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
            video[:start.shape[0]] = start
            keep[:start.shape[0] + TEMPORAL - 1] = 0.0
        if end_image is not None:
            end = resample(end_image[-length:].movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
            video[length - end.shape[0]:] = end
            keep[keep.shape[0] - end.shape[0]:] = 0.0
        image, channels, spatial, _ = _encode_clip(ctx, vae, video, "WanFirstLastFrameToVideo")
        h, w = height // spatial, width // spatial
        mask = keep.view(1, frames, TEMPORAL, 1, 1).transpose(1, 2).expand(1, TEMPORAL, frames, h, w).contiguous()
        positive = _with_extras(positive, concat_latent_image=image, concat_mask=mask)
        negative = _with_extras(negative, concat_latent_image=image, concat_mask=mask)
        vision = clip_vision_start_image
        if clip_vision_end_image is not None:
            if vision is None:
                vision = clip_vision_end_image
            else:  # both images' states, one after the other (FLF2V's image embedder takes 2 × 257 tokens)
                states = torch.cat([vision.penultimate_hidden_states,
                                    clip_vision_end_image.penultimate_hidden_states], dim=-2)
                vision = ClipVisionOutput(last_hidden_state=None, image_embeds=None,
                                          penultimate_hidden_states=states)
        if vision is not None:
            positive = _with_extras(positive, clip_vision_output=vision)
            negative = _with_extras(negative, clip_vision_output=vision)
        latent = torch.zeros(batch_size, channels, frames, h, w)
        return (positive, negative, {"samples": latent, "downscale": spatial})


class WanFunInpaintToVideo(WanFirstLastFrameToVideo):
    """Condition a Wan Fun InP model on a start and/or end image (WanFirstLastFrameToVideo with one CLIP vision
    output)."""

    DISPLAY_NAME = "WanFunInpaintToVideo"
    INPUTS = {k: v for k, v in WanFirstLastFrameToVideo.INPUTS.items()
              if k not in ("clip_vision_start_image", "clip_vision_end_image", "start_image", "end_image")}
    INPUTS.update({"clip_vision_output": Link("CLIP_VISION_OUTPUT", optional=True),
                   "start_image": Link("IMAGE", optional=True), "end_image": Link("IMAGE", optional=True)})

    def execute(self, ctx, positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                batch_size: int, clip_vision_output: Any = None, start_image: Any = None, end_image: Any = None):
        return super().execute(ctx, positive, negative, vae, width, height, length, batch_size,
                               clip_vision_start_image=clip_vision_output, start_image=start_image,
                               end_image=end_image)


class WanVaceToVideo(Node):
    """Condition a Wan VACE model on a control video (with masks) and/or a reference image; ``trim_latent`` is the
    number of reference latent frames to cut from the sampled latent with TrimVideoLatent."""

    DISPLAY_NAME = "WanVaceToVideo"
    CATEGORY = "conditioning/video_models"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              **_WAN_SIZE,
              "strength": Float(1.0, min=0.0, max=1000.0, step=0.01),
              "control_video": Link("IMAGE", optional=True), "control_masks": Link("MASK", optional=True),
              "reference_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"),
               Output("INT", "trim_latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, width: int, height: int, length: int,
                batch_size: int, strength: float, control_video: Any = None, control_masks: Any = None,
                reference_image: Any = None):
        import torch
        import torch.nn.functional as F

        frames = _frames(length)
        if control_video is None:
            video = torch.full((length, 3, height, width), 0.5)
        else:
            video = resample(control_video[:length].movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
            if video.shape[0] < length:
                video = F.pad(video, (0, 0, 0, 0, 0, 0, 0, length - video.shape[0]), value=0.5)
        if control_masks is None:
            mask = torch.ones(length, 1, height, width)
        else:
            mask = control_masks.reshape(-1, 1, *control_masks.shape[-2:])[:length].float()
            mask = resample(mask, width, height, "bilinear", "center")
            if mask.shape[0] < length:
                mask = F.pad(mask, (0, 0, 0, 0, 0, 0, 0, length - mask.shape[0]), value=1.0)
        video = video - 0.5
        inactive, _, _, mean = _encode_clip(ctx, vae, video * (1.0 - mask) + 0.5, "WanVaceToVideo")
        reactive = _encode_clip(ctx, vae, video * mask + 0.5, "WanVaceToVideo")[0]
        control = torch.cat([inactive, reactive], dim=1)
        trim = 0
        if reference_image is not None:
            ref = resample(reference_image[:1].movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
            ref = _encode_clip(ctx, vae, ref, "WanVaceToVideo")[0]
            ref = torch.cat([ref, mean.expand_as(ref)], dim=1)  # the second half: a zero latent (its raw mean)
            control = torch.cat([ref, control], dim=2)
            trim = ref.shape[2]
        # one mask channel per pixel of each 8 × 8 cell, resampled to the latent frames (ComfyUI's layout)
        h, w = height // SPATIAL, width // SPATIAL
        cells = mask[:, 0].reshape(length, h, SPATIAL, w, SPATIAL).permute(2, 4, 0, 1, 3)
        cells = cells.reshape(SPATIAL * SPATIAL, length, h, w)
        cells = F.interpolate(cells.unsqueeze(0), size=(frames, h, w), mode="nearest-exact")
        if trim:
            cells = torch.cat([cells.new_zeros(1, SPATIAL * SPATIAL, trim, h, w), cells], dim=2)
        values = {"vace_frames": [control], "vace_mask": [cells], "vace_strength": [float(strength)]}
        positive, negative = (_append_extras(cond, values) for cond in (positive, negative))
        latent = torch.zeros(batch_size, LATENT_CHANNELS, frames + trim, h, w)
        return (positive, negative, {"samples": latent, "downscale": SPATIAL}, trim)


def _append_extras(conditioning: list, values: dict[str, list]) -> list:
    """A copy of ``conditioning`` with each list in ``values`` appended to the entry's list of that name."""
    return [(emb, dict(extras, **{k: list(extras.get(k) or []) + v for k, v in values.items()}))
            for emb, extras in conditioning]


class Wan22ImageToVideoLatent(Node):
    """An empty Wan 2.2 TI2V-5B video latent (48 channels, 16× spatial), optionally starting from an image."""

    DISPLAY_NAME = "Wan22ImageToVideoLatent"
    CATEGORY = "conditioning/inpaint"
    INPUTS = {"vae": Link("VAE"),
              "width": Int(1280, min=32, max=MAX_RESOLUTION, step=32),
              "height": Int(704, min=32, max=MAX_RESOLUTION, step=32),
              "length": Int(49, min=1, max=MAX_RESOLUTION, step=4),
              "batch_size": Int(1, min=1, max=4096),
              "start_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, vae: Any, width: int, height: int, length: int, batch_size: int = 1,
                start_image: Any = None):
        import torch

        frames, spatial = _frames(length), SPATIAL_22
        latent = torch.zeros(1, LATENT_CHANNELS_22, frames, height // spatial, width // spatial)
        if start_image is None:
            return ({"samples": latent.repeat(batch_size, 1, 1, 1, 1), "downscale": spatial},)
        start = resample(start_image[:length].movedim(-1, 1), width, height, "bilinear", "center")[:, :3]
        with ctx.models.use(vae) as (loaded,):
            inner = loaded.vae
            if not hasattr(inner, "encode_video") or int(inner.config.latent_channels) != LATENT_CHANNELS_22:
                raise ValueError("Wan22ImageToVideoLatent: this VAE is not the Wan 2.2 VAE (48 latent channels); "
                                 "load wan2.2_vae.safetensors with VAELoader")
            image = encode_pixels(ctx, inner, start)
            mean = inner.latents_mean.float().cpu().view(1, -1, 1, 1, 1)
        kept = image.shape[2]
        mask = torch.ones(1, 1, frames, latent.shape[-2], latent.shape[-1])
        mask[:, :, :kept] = 0.0
        # ComfyUI: frames to generate hold the latent mean (zero in the model's normalised space)
        latent = mean.expand_as(latent).clone()
        latent[:, :, :kept] = image[:, :, :frames]
        return ({"samples": latent.repeat(batch_size, 1, 1, 1, 1), "noise_mask": mask.repeat(batch_size, 1, 1, 1, 1),
                 "downscale": spatial},)


@hookimpl
def nodegraph_nodes():
    """The Wan video nodes."""
    return [EmptyHunyuanLatentVideo, TrimVideoLatent, WanImageToVideo, WanFirstLastFrameToVideo, WanFunInpaintToVideo,
            WanVaceToVideo, Wan22ImageToVideoLatent]
