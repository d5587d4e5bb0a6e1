"""The base of the VAE wrappers that put a diffusers VAE (``self.inner``) behind the image-VAE interface."""

from __future__ import annotations

from typing import Any

import torch


class InnerVAE(torch.nn.Module):
    """A wrapper around ``self.inner``: reconstruction through its own encode/decode, and the inner tiling switch."""

    def forward(self, x: Any) -> Any:
        """Reconstruction of images [B, 3, H, W]."""
        return self.decode(self.encode(x).latent_dist.mean).sample

    @property
    def use_tiling(self) -> bool:
        """Whether the inner VAE decodes in tiles."""
        return bool(self.inner.use_tiling)

    @use_tiling.setter
    def use_tiling(self, value: bool) -> None:
        self.inner.use_tiling = bool(value)


__all__ = ["InnerVAE"]
