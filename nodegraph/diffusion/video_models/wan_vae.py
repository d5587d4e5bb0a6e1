"""The Wan 2.1 video VAE (``AutoencoderKLWan``: causal 3D convolutions, 16 channels, 8× spatial, 4× temporal).

The same file (``wan_2.1_vae.safetensors`` = ``qwen_image_vae.safetensors``) serves Wan's videos and Qwen-Image's
images, so ``WanVideoVAE`` speaks both conventions through the image-VAE interface (``config.latent_channels``,
``encode(x).latent_dist``, ``decode(z).sample``), chosen by the latent's shape:
- video ``[B, 16, T, h, w]`` (ComfyUI's Wan convention, raw VAE latents): ``decode`` returns every frame of every
  video as one image batch ``[B · (4(T - 1) + 1), 3, H, W]`` — so VAEDecode yields the frames as an IMAGE batch;
  ``encode_video`` turns the frames of one video ``[N, 3, H, W]`` into ``[1, 16, (N - 1) // 4 + 1, H/8, W/8]``;
- image ``[B, 16, h, w]`` (Qwen-Image's convention, ``nodegraph.diffusion.qwen.vae``): one frame each, latents
  normalised per channel with ``latents_mean``/``latents_std``.
Files: ComfyUI's/the original layout (converted with diffusers' converter) or diffusers' layout. The Wan 2.2 VAE
(48 channels, 16× spatial, for the 5B model; ``wan22_vae``) loads behind the same wrapper: its video latents are
``[B, 48, T, H/16, W/16]``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..inner_vae import InnerVAE
from ..types import VAEModel
from .wan_files import shipped_config

_ORIGINAL = "decoder.middle.0.residual.0.gamma"
_DIFFUSERS = "decoder.mid_block.resnets.0.norm1.gamma"


def is_wan_vae(keys: Any) -> bool:
    """Whether tensor names are a Wan 2.1 video VAE's (original or diffusers layout)."""
    keys = set(keys)
    return _ORIGINAL in keys or _DIFFUSERS in keys


class WanVideoVAE(InnerVAE):
    """An ``AutoencoderKLWan`` behind the image-VAE interface: video latents raw, image latents normalised."""

    #: VAEEncode(Tiled) encodes an IMAGE batch image by image (Qwen-Image's latents), not as one clip
    images_are_frames = False

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        z = int(inner.config.z_dim)
        self.register_buffer("latents_mean", torch.tensor(inner.config.latents_mean, dtype=torch.float32)
                             .view(1, z, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(inner.config.latents_std, dtype=torch.float32)
                             .view(1, z, 1, 1), persistent=False)
        #: pixels per latent cell (8 for Wan 2.1, 16 for Wan 2.2) and frames per latent frame after the first
        self.spatial = int(inner.config.scale_factor_spatial or 8)
        self.temporal_compression = int(inner.config.scale_factor_temporal or 4)
        # VAEModel.downscale is 2 ** (len(block_out_channels) - 1)
        self.config = SimpleNamespace(latent_channels=z, block_out_channels=(0,) * (self.spatial.bit_length()),
                                      scaling_factor=1.0, shift_factor=0.0, z_dim=z, force_upcast=False)

    def encode_video(self, frames: Any) -> Any:
        """Raw posterior mean ``[1, C, T, h, w]`` of one video's frames ``[N, 3, H, W]`` in -1..1."""
        return self.inner.encode(frames.movedim(0, 1).unsqueeze(0)).latent_dist.mean

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist``: raw for videos ``[B, 3, T, H, W]``; normalised per image for ``[B, 3, H, W]``."""
        if x.dim() == 5:
            return SimpleNamespace(latent_dist=self.inner.encode(x).latent_dist)
        raw = self.inner.encode(x.unsqueeze(2)).latent_dist.mean[:, :, 0]
        mean = (raw - self.latents_mean.to(x.dtype)) / self.latents_std.to(x.dtype)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, mode=lambda: mean))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: the frames ``[B · F, 3, H, W]`` of raw video latents, or images of normalised ``[B, C, h, w]``."""
        if z.dim() == 5:
            frames = self.inner.decode(z).sample.movedim(2, 1).flatten(0, 1)
        else:
            raw = z * self.latents_std.to(z.dtype) + self.latents_mean.to(z.dtype)
            frames = self.inner.decode(raw.unsqueeze(2)).sample[:, :, 0]
        return SimpleNamespace(sample=frames) if return_dict else (frames,)

    # diffusers' AutoencoderKL tiling attributes (what VAEDecodeTiled/VAEEncodeTiled set for image latents),
    # mapped onto the Wan VAE's spatial tiles; video latents are tiled in time and space by video_tiling.
    @property
    def tile_sample_min_size(self) -> int:
        """Tile size in pixels."""
        return int(self.inner.tile_sample_min_height)

    @tile_sample_min_size.setter
    def tile_sample_min_size(self, value: int) -> None:
        self.inner.tile_sample_min_height = self.inner.tile_sample_min_width = int(value)

    @property
    def tile_latent_min_size(self) -> int:
        """Tile size in latent cells (follows from the pixel size)."""
        return int(self.inner.tile_sample_min_height) // self.spatial

    @tile_latent_min_size.setter
    def tile_latent_min_size(self, value: int) -> None:
        pass

    @property
    def tile_overlap_factor(self) -> float:
        """Overlap of neighbouring tiles as a fraction of the tile."""
        return 1.0 - self.inner.tile_sample_stride_height / self.inner.tile_sample_min_height

    @tile_overlap_factor.setter
    def tile_overlap_factor(self, value: float) -> None:
        size = int(self.inner.tile_sample_min_height)
        stride = max(8, round(size * (1.0 - float(value)) / 8) * 8)
        self.inner.tile_sample_stride_height = self.inner.tile_sample_stride_width = stride


def _config(state: dict[str, Any], name: str) -> dict[str, Any]:
    conv = state.get("decoder.conv_in.weight")
    first = state.get("encoder.conv_in.weight")
    if conv is None or first is None:
        raise UnknownModelError(f"{name} lacks the Wan VAE's encoder/decoder input convolutions; the file is "
                                "incomplete")
    z_dim = int(conv.shape[1])
    if z_dim != 16 or int(first.shape[1]) != 3:
        raise UnknownModelError(f"{name} has Wan 2.1 VAE names but {z_dim} latent channels and "
                                f"{int(first.shape[1])} input channels (Wan 2.1's VAE has 16 and 3, Wan 2.2's has "
                                "48 and 12 with residual up/down blocks); the file is not a Wan VAE this version "
                                "knows")
    return dict(shipped_config("vae_wan2.1"), base_dim=int(first.shape[0]), z_dim=z_dim)


def wan_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel | None:
    """VAE from a Wan video VAE's tensors (``state`` is emptied); None when they are not a Wan VAE's."""
    from diffusers import AutoencoderKLWan

    from ..flow.loading import filled_model
    from ..loading import quiet_libraries

    if not is_wan_vae(state):
        return None
    from .wan22_vae import config_from_state, is_wan22_vae, to_diffusers

    if is_wan22_vae(state):
        converted = to_diffusers(state)
        config = config_from_state(converted, name)
    else:
        if _ORIGINAL in state:
            from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

            with quiet_libraries():
                converted = convert_wan_vae_to_diffusers(state)
        else:
            converted = state
        config = _config(converted, name)
    if converted is not state:
        state.clear()
    state = converted
    inner = filled_model(AutoencoderKLWan, config, state, name, dtype)
    return VAEModel(vae=WanVideoVAE(inner).eval(), scaling_factor=1.0, shift_factor=0.0, source=name)


def latent_stats(channels: int) -> tuple[Any, Any]:
    """Per-channel (mean, std) ``[1, C, 1, 1, 1]`` float32 of the Wan VAE's latents (model input = (z - mean) / std)."""
    cfg = shipped_config("vae_wan2.2" if channels == 48 else "vae_wan2.1")
    if channels != len(cfg["latents_mean"]):
        raise ValueError(f"no latent statistics for {channels}-channel Wan latents; use a 16-channel latent "
                         "(EmptyHunyuanLatentVideo) for Wan 2.1 / 2.2 14B or a 48-channel one "
                         "(Wan22ImageToVideoLatent) for Wan 2.2 TI2V-5B")
    shape = (1, channels, 1, 1, 1)
    return (torch.tensor(cfg["latents_mean"], dtype=torch.float32).view(shape),
            torch.tensor(cfg["latents_std"], dtype=torch.float32).view(shape))


__all__ = ["WanVideoVAE", "is_wan_vae", "latent_stats", "wan_vae_from_state"]
