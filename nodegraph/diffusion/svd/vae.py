"""SVD's VAE (``AutoencoderKLTemporalDecoder``) behind the image-VAE interface the nodes use.

``encode`` of an IMAGE batch ``[N, 3, H, W]`` encodes each image (SD's 2-D encoder); ``decode`` of latents
``[F, 4, h, w]`` decodes them as the frames of one clip (the decoder mixes neighbouring frames), as ComfyUI decodes
a batch with its VideoDecoder — VAEDecode yields the frames as an IMAGE batch.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch


class SVDVideoVAE(torch.nn.Module):
    """An ``AutoencoderKLTemporalDecoder`` whose decode treats the latent batch as one clip."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """The posterior of each image ``[N, 3, H, W]`` in -1..1 (``.latent_dist``)."""
        return self.inner.encode(x, return_dict=return_dict)

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: the frames ``[F, 3, H, W]`` of a clip's unscaled latents ``[F, 4, h, w]``."""
        if z.dim() != 4:
            raise ValueError(f"the SVD VAE decodes a clip's latents [frames, 4, h, w], not {tuple(z.shape)}; "
                             "connect the LATENT of a sampler on the SVD model")
        frames = self.inner.decode(z, num_frames=int(z.shape[0])).sample
        return SimpleNamespace(sample=frames) if return_dict else (frames,)

    def forward(self, x: Any) -> Any:
        """Reconstruction of the frames of one clip ``[F, 3, H, W]``."""
        return self.decode(self.encode(x).latent_dist.mode()).sample


__all__ = ["SVDVideoVAE"]
