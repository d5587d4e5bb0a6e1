"""Cosmos Predict2 and AuraFlow nodes (ComfyUI names).

AuraFlow needs no nodes of its own: CheckpointLoaderSimple reads ComfyUI's ``aura_flow_0.x.safetensors`` (the
Pile-T5 tokenizer from a ``pile_t5_tokenizer/`` folder beside it), ModelSamplingAuraFlow sets its shift, KSampler
samples it. Cosmos Predict2 text-to-image: UNETLoader, CLIPLoader type ``cosmos`` (old T5-XXL), VAELoader (Wan 2.1),
EmptySD3LatentImage, KSampler. Video2world: the video latents are ``[B, 16, T, h, w]`` (Wan 2.1's VAE: 4× in time,
8× in space); ``CosmosPredict2ImageToVideoLatent`` encodes a start/end image into it with a noise mask, as ComfyUI
does, and KSampler keeps those frames (the video2world UNETLoader file).
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import Int, Link, Node, Output, hookimpl, resample

MAX_RESOLUTION = 16384
CHANNELS, SPATIAL = 16, 8


class EmptyCosmosLatentVideo(Node):
    """An empty Cosmos video latent (16 channels, 8× spatial, 8× temporal compression: Cosmos 1.0's tokenizer)."""

    DISPLAY_NAME = "EmptyCosmosLatentVideo"
    CATEGORY = "latent/video"
    INPUTS = {"width": Int(1280, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(704, min=16, max=MAX_RESOLUTION, step=16),
              "length": Int(121, min=1, max=MAX_RESOLUTION, step=8),
              "batch_size": Int(1, min=1, max=4096)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, length: int, batch_size: int = 1):
        import torch

        samples = torch.zeros(batch_size, CHANNELS, (length - 1) // 8 + 1, height // SPATIAL, width // SPATIAL)
        return ({"samples": samples, "downscale": SPATIAL},)


def _encode_padded(inner: Any, image: Any, width: int, height: int, length: int, padding: int) -> Any:
    """ComfyUI's vae_encode_with_padding: the frames resized and padded with grey to whole 8-frame groups, encoded,
    the latent frames of the given frames kept (raw, [1, 16, t, h, w])."""
    import torch

    pixels = resample(image[..., :3].movedim(-1, 1), width, height, "bilinear", "center")
    count = min(pixels.shape[0], length)
    padded = min(length, (((count - 1) // 8) + 1 + padding) * 8 - 7)
    frames = torch.full((padded, 3, height, width), 0.5)
    frames[:count] = pixels[:count]
    param = next(inner.parameters())
    with torch.no_grad():
        latent = inner.encode_video(frames.to(param.device, param.dtype) * 2.0 - 1.0).float().cpu()
    return latent[:, :, :((count - 1) // 8) + 1]


class CosmosPredict2ImageToVideoLatent(Node):
    """A Cosmos Predict2 video2world latent: empty, or holding an encoded start and/or end image kept by its mask."""

    DISPLAY_NAME = "CosmosPredict2ImageToVideoLatent"
    CATEGORY = "conditioning/inpaint"
    INPUTS = {"vae": Link("VAE"),
              "width": Int(848, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(480, min=16, max=MAX_RESOLUTION, step=16),
              "length": Int(93, min=1, max=MAX_RESOLUTION, step=4),
              "batch_size": Int(1, min=1, max=4096),
              "start_image": Link("IMAGE", optional=True),
              "end_image": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, vae: Any, width: int, height: int, length: int, batch_size: int = 1,
                start_image: Any = None, end_image: Any = None):
        import torch

        frames = (length - 1) // 4 + 1
        latent = torch.zeros(1, CHANNELS, frames, height // SPATIAL, width // SPATIAL)
        if start_image is None and end_image is None:
            return ({"samples": latent, "downscale": SPATIAL},)
        mask = torch.ones(1, 1, frames, latent.shape[-2], latent.shape[-1])
        with ctx.models.use(vae) as (loaded,):
            inner = loaded.vae
            if not hasattr(inner, "encode_video") or int(inner.config.latent_channels) != CHANNELS:
                raise ValueError("CosmosPredict2ImageToVideoLatent: this VAE is not the Wan 2.1 VAE (16 latent "
                                 "channels, video); load wan_2.1_vae.safetensors with VAELoader")
            with ctx.devices.use(inner):
                if start_image is not None:
                    start = _encode_padded(inner, start_image, width, height, length, 1)
                    latent[:, :, :start.shape[2]] = start
                    mask[:, :, :start.shape[2]] = 0.0
                if end_image is not None:
                    end = _encode_padded(inner, end_image, width, height, length, 0)
                    latent[:, :, -end.shape[2]:] = end
                    mask[:, :, -end.shape[2]:] = 0.0
            mean = inner.latents_mean.float().cpu().view(1, -1, 1, 1, 1)
        latent = mean * mask + latent * (1.0 - mask)  # frames to generate hold the latent mean (ComfyUI)
        return ({"samples": latent.repeat(batch_size, 1, 1, 1, 1), "noise_mask": mask.repeat(batch_size, 1, 1, 1, 1),
                 "downscale": SPATIAL},)


@hookimpl
def nodegraph_nodes():
    """The Cosmos Predict2 nodes (AuraFlow uses the core loaders and ModelSamplingAuraFlow)."""
    return [EmptyCosmosLatentVideo, CosmosPredict2ImageToVideoLatent]
