"""Mochi video nodes: EmptyMochiLatentVideo (ComfyUI's name, inputs and output).

Text-to-video needs no other node of its own: UNETLoader (mochi_preview_bf16 / fp8_scaled), CLIPLoader type
``mochi`` (T5-XXL), VAELoader (mochi_vae), CLIPTextEncode, KSampler (ComfyUI's model sampling: flow, shift 6) and
VAEDecode return the frames; CheckpointLoaderSimple reads the all-in-one mochi_preview_fp8_scaled file.
"""

from __future__ import annotations

from nodegraph.api import Int, Node, Output, empty_mochi_latent, hookimpl

MAX_RESOLUTION = 16384
TEMPORAL, SPATIAL = 6, 8


class EmptyMochiLatentVideo(Node):
    """An empty Mochi video latent: 12 channels, 8× spatial and 6× temporal compression.

    LATENT holds Mochi latents normalised per channel (the Mochi VAE's convention here), so ComfyUI's all-zero raw
    latent is ``-latents_mean / latents_std``: what ComfyUI's sampler sees, which matters when denoise < 1."""

    DISPLAY_NAME = "EmptyMochiLatentVideo"
    CATEGORY = "latent/video"
    INPUTS = {"width": Int(848, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(480, min=16, max=MAX_RESOLUTION, step=16),
              "length": Int(25, min=7, max=MAX_RESOLUTION, step=6),
              "batch_size": Int(1, min=1, max=4096)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, length: int, batch_size: int = 1):
        frames = (length - 1) // TEMPORAL + 1
        samples = empty_mochi_latent(batch_size, frames, height // SPATIAL, width // SPATIAL)
        return ({"samples": samples, "downscale": SPATIAL},)


@hookimpl
def nodegraph_nodes():
    """The Mochi nodes."""
    return [EmptyMochiLatentVideo]
