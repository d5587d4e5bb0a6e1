"""The values that flow along MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE and MASK links.

Conventions (ComfyUI's, so its workflows mean the same thing here):
- IMAGE: float32 tensor [B, H, W, C] in 0..1 on the CPU. MASK: float32 [B, H, W] (or [H, W]) in 0..1, 1 = inpaint.
- LATENT: dict {"samples": tensor [B, C, h, w] as the VAE produced it, *before* the scaling factor is applied,
  optional "noise_mask": [B, 1, h|H, w|W], optional "batch_index": list[int]}.
- CONDITIONING: list of (embeddings [B, T, D], extras dict) pairs; extras may hold "pooled_output" (SDXL),
  "strength" (float). Several pairs (ConditioningCombine) have their noise predictions averaged.
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
    """A LoRA applied with a strength; ``path`` is a .safetensors file."""

    name: str
    path: str
    strength: float


@dataclass(frozen=True, eq=False)
class DiffusionModel:
    """MODEL: a UNet with what sampling needs to know about it."""

    unet: Any  # diffusers UNet2DConditionModel
    scheduler_config: dict[str, Any]  # diffusers scheduler config of the checkpoint (betas, prediction_type, …)
    arch: str  # "sd1" | "sd2" | "sdxl" | "embedded" | ...
    source: str  # the checkpoint name it came from
    loras: tuple[LoraPatch, ...] = ()

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
    loras: tuple[LoraPatch, ...] = ()

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
