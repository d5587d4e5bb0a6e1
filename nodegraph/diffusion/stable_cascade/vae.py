"""Stage A (the Paella VQGAN, diffusers' ``PaellaVQModel``) behind the image-VAE interface, as ComfyUI uses it:
images in 0..1 go in and come out unquantized (ComfyUI's StageA ``encode(quantize=False)``/``decode``), latents are
the raw 4-channel 1/4-scale ones (the MODEL's are these × 1/0.43, ``VAEModel.scaling_factor``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..types import VAEModel


def paella_class() -> Any:
    """diffusers' PaellaVQModel (kept under its deprecated Würstchen pipeline)."""
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import (
        PaellaVQModel,
    )

    return PaellaVQModel


class PaellaVAE(torch.nn.Module):
    """A ``PaellaVQModel`` speaking AutoencoderKL's encode/decode with images in -1..1."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        down = int(inner.config.up_down_scale_factor) * 2 ** (int(inner.config.levels) - 1)
        blocks = (1,) * (down.bit_length())  # VAEModel.downscale = 2 ** (len - 1)
        self.config = SimpleNamespace(latent_channels=int(inner.config.latent_channels), block_out_channels=blocks,
                                      scaling_factor=1.0 / 0.43, shift_factor=0.0, force_upcast=False)
        self.use_tiling = False

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist.mean``: stage A latents [B, 4, H/4, W/4] of images [B, 3, H, W] in -1..1."""
        z = self.inner.encode((x + 1.0) / 2.0).latents
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, mode=lambda: z, sample=lambda generator=None: z))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: images [B, 3, H, W] in -1..1 of stage A latents."""
        img = self.inner.decode(z, force_not_quantize=True).sample * 2.0 - 1.0
        return SimpleNamespace(sample=img) if return_dict else (img,)

    def forward(self, x: Any) -> Any:
        """Reconstruction of images [B, 3, H, W]."""
        return self.decode(self.encode(x).latent_dist.mean).sample


class MissingVAE(torch.nn.Module):
    """The VAE slot of a checkpoint whose VAE is not supported: says so when used."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.config = SimpleNamespace(latent_channels=16, block_out_channels=(1,) * 6, scaling_factor=1.0,
                                      shift_factor=0.0, force_upcast=False)
        self.use_tiling = False

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """Raises ValueError naming the fix."""
        raise ValueError(self.message)

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """Raises ValueError naming the fix."""
        raise ValueError(self.message)


def missing_vae(name: str, what: str) -> VAEModel:
    """A VAE placeholder for a checkpoint holding ``what`` (an unsupported VAE) that explains itself when used."""
    return VAEModel(vae=MissingVAE(f"{name} carries {what}, which this engine does not run; decode stage B latents "
                                   "with the stage B checkpoint's VAE (stage A), and for StableCascade_StageC_VAEEncode "
                                   "use the text-to-image graph instead"), scaling_factor=1.0, source=name)


__all__ = ["MissingVAE", "PaellaVAE", "missing_vae", "paella_class"]
