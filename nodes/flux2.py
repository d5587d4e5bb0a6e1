"""Flux.2 (dev, Klein) nodes: EmptyFlux2LatentImage and Flux2Scheduler, with ComfyUI's names.

Flux.2 itself loads through the split loaders: UNETLoader (the transformer), CLIPLoader type ``flux2`` (Mistral
Small 3.x for dev, Qwen3 for Klein), VAELoader (its 32-channel VAE); guidance comes from FluxGuidance and reference
images from ReferenceLatent, as for Flux.1.
"""

from __future__ import annotations

from nodegraph.api import Combo, Int, Link, Node, Output, flux2_sigmas, hookimpl

MAX_RESOLUTION = 16384


class EmptyFlux2LatentImage(Node):
    """A batch of empty Flux.2 latents (128 channels at 1/16 scale) for text-to-image."""

    DISPLAY_NAME = "Empty Flux 2 Latent"
    CATEGORY = "latent"
    INPUTS = {"width": Int(1024, min=16, max=MAX_RESOLUTION, step=16),
              "height": Int(1024, min=16, max=MAX_RESOLUTION, step=16),
              "batch_size": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, batch_size: int = 1):
        import torch

        samples = torch.zeros(batch_size, 128, height // 16, width // 16)
        return ({"samples": samples, "pixel_size": (height, width), "downscale": 16},)


class Flux2Scheduler(Node):
    """Flux.2's noise levels for an image size: time-shifted by the empirical mu of its token and step counts."""

    DISPLAY_NAME = "Flux2Scheduler"
    CATEGORY = "sampling/custom_sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=4096, step=None),
              "width": Int(1024, min=16, max=MAX_RESOLUTION, step=1),
              "height": Int(1024, min=16, max=MAX_RESOLUTION, step=1)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps: int, width: int, height: int):
        return (flux2_sigmas(steps, width, height),)


class FluxKontextMultiReferenceLatentMethod(Node):
    """Choose how reference latents (ReferenceLatent) are placed: "index" (Flux.2's default: each its own time
    index), "offset" (Flux Kontext's: side by side) or "uxo/uno" (beyond the image)."""

    DISPLAY_NAME = "Edit Model Reference Method"
    CATEGORY = "advanced/conditioning/flux"
    INPUTS = {"conditioning": Link("CONDITIONING"),
              "reference_latents_method": Combo(("offset", "index", "uxo/uno", "index_timestep_zero"))}
    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx, conditioning: list, reference_latents_method: str):
        method = "uxo" if "uxo" in reference_latents_method or "uso" in reference_latents_method \
            else reference_latents_method
        return ([(emb, dict(extras, reference_latents_method=method)) for emb, extras in conditioning],)


@hookimpl
def nodegraph_nodes():
    """The Flux.2 (dev, Klein) nodes."""
    return [EmptyFlux2LatentImage, Flux2Scheduler, FluxKontextMultiReferenceLatentMethod]
