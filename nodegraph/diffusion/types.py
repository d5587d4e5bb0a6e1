"""The values that flow along MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE and MASK links.

Conventions (ComfyUI's, so its workflows mean the same thing here):
- IMAGE: float32 tensor [B, H, W, C] in 0..1 on the CPU. MASK: float32 [B, H, W] (or [H, W]) in 0..1, 1 = inpaint.
- LATENT: dict {"samples": tensor [B, C, h, w] as the VAE produced it, *before* the scaling factor is applied,
  optional "noise_mask": [B, 1, h|H, w|W], optional "batch_index": list[int], optional "downscale": int (pixels
  per latent cell, when known), optional "pixel_size": (H, W) (only on an untouched EmptyLatentImage output, which
  KSampler may re-create in the shape the model expects)}.
- CONDITIONING: list of (embeddings [B, T, D], extras dict) pairs; extras may hold "pooled_output" (SDXL),
  "strength" (float), "area", "mask"/"mask_strength"/"set_area_to_bounds", "start_percent"/"end_percent" (see
  ``regions``). Several pairs (ConditioningCombine) have their noise predictions averaged (composed per latent cell
  when some have an area, mask or timestep range).
Model wrappers are never mutated by nodes: a node that changes one (LoraLoader, CLIPSetLastLayer) returns a copy
that shares the weights and records the change, which is applied while sampling/encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


def _module_bytes(*modules: Any) -> int:
    total = 0
    for m in modules:
        if m is not None:
            total += sum(int(t.element_size() * t.numel()) for t in (*m.parameters(), *m.buffers()))
    return total


@dataclass(frozen=True)
class LoraPatch:
    """A LoRA applied with a strength; ``path`` is a .safetensors file (a pickle only with ``allow_pickle``)."""

    name: str
    path: str
    strength: float
    allow_pickle: bool = False


@dataclass(frozen=True)
class LatentFormat:
    """The latent space a UNet works in (its VAE's): shape, scaling, and a cheap latent → RGB projection."""

    channels: int = 4
    downscale: int = 8  # pixels per latent cell
    scaling_factor: float = 0.18215
    shift_factor: float = 0.0
    #: (channels + 1) rows of 3: unscaled latent → RGB in -1..1 (last row is the bias); None = not fitted.
    rgb: tuple[tuple[float, float, float], ...] | None = None

    @classmethod
    def from_vae(cls, vae: "VAEModel", fit_rgb: bool = True) -> "LatentFormat":
        """The format of ``vae``'s latents; ``fit_rgb`` fits the preview projection with one tiny decode."""
        rgb = None
        if fit_rgb:
            from .preview import fit_latent_rgb

            rgb = fit_latent_rgb(vae.vae)
        return cls(channels=int(vae.vae.config.latent_channels), downscale=vae.downscale,
                   scaling_factor=vae.scaling_factor, shift_factor=vae.shift_factor, rgb=rgb)


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """MODEL: a UNet with what sampling needs to know about it."""

    unet: Any  # diffusers UNet2DConditionModel
    scheduler_config: dict[str, Any]  # diffusers scheduler config of the checkpoint (betas, prediction_type, …)
    arch: str  # "sd1" | "sd2" | "sdxl" | "embedded" | ...
    source: str  # the checkpoint name it came from
    loras: tuple[Any, ...] = ()  # weight patches in order: LoraPatch, merging.MergePatch
    latent: LatentFormat = LatentFormat()  # its VAE's latent space (set by the loader: LatentFormat.from_vae)
    #: "unet" (a diffusers UNet, ``sampling``) or a flow-matching transformer family ("flux": ``unet`` holds the
    #: diffusers transformer, ``flow`` its ``flow.schedule.FlowSettings``; sampled by ``nodegraph.diffusion.flow``).
    family: str = "unet"
    flow: Any = None
    #: sampling patches in order (``patches``: RescaleCFG, FreeU, …), applied while it samples
    patches: tuple[Any, ...] = ()

    @property
    def prediction_type(self) -> str:
        """epsilon | v_prediction | sample."""
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def nbytes(self) -> int:
        """Approximate memory held (for the cache bound)."""
        return _module_bytes(self.unet)

    def with_lora(self, patch: LoraPatch) -> "DiffusionModel":
        """A copy with one more LoRA (weights shared)."""
        return replace(self, loras=self.loras + (patch,))


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """CLIP: tokenizer(s) and text encoder(s); SDXL has two of each."""

    tokenizers: tuple[Any, ...]
    encoders: tuple[Any, ...]
    arch: str
    stop_at_layer: int = -1  # CLIPSetLastLayer: -1 = last layer, -2 = penultimate, …
    loras: tuple[Any, ...] = ()  # weight patches in order: LoraPatch, merging.MergePatch
    #: tokenizer options as (key, value) pairs, ComfyUI's names (T5TokenizerOptions: "t5xxl_min_padding", …)
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return _module_bytes(*self.encoders)


@dataclass(frozen=True, eq=False)
class VAEModel:
    """VAE: an AutoencoderKL and how its latents are scaled for the UNet."""

    vae: Any  # diffusers AutoencoderKL
    scaling_factor: float
    shift_factor: float = 0.0
    source: str = ""

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return _module_bytes(self.vae)

    @property
    def downscale(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint loader produces."""

    model: DiffusionModel
    clip: TextEncoder
    vae: VAEModel
    extras: dict[str, Any] = field(default_factory=dict)
