"""The Flux.2 VAE (``AutoencoderKLFlux2``: 32 latent channels, 8× down) behind the image-VAE interface, in the
latent space the Flux.2 transformer and ComfyUI's LATENT use: 2×2 patches of the VAE latent folded into 128
channels at 1/16 scale and normalised with the VAE's batch-norm statistics, exactly as Flux2Pipeline does it
(``_patchify_latents`` then ``(z - running_mean) / sqrt(running_var + batch_norm_eps)``; decoding inverts both).
Files: ComfyUI's/the original layout (``encoder.down.N``, converted with diffusers' LDM-VAE converter) or diffusers'.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..inner_vae import InnerVAE
from ..types import VAEModel
from .detect import is_flux2_vae_keys, shipped_config

_BN = ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked")


def patchify(z: Any) -> Any:
    """[B, C, H, W] → [B, 4C, H/2, W/2] (Flux2Pipeline's ``_patchify_latents``)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(z: Any) -> Any:
    """[B, 4C, h, w] → [B, C, 2h, 2w] (Flux2Pipeline's ``_unpatchify_latents``)."""
    b, c, h, w = z.shape
    return z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


class Flux2VAE(InnerVAE):
    """An ``AutoencoderKLFlux2`` whose latents are the transformer's: patchified and batch-norm normalised."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        blocks = tuple(inner.config.block_out_channels)
        channels = int(inner.config.latent_channels) * 4
        # one more (virtual) block: VAEModel.downscale = 2 ** (len - 1) = 16 counts the 2×2 patches
        self.config = SimpleNamespace(latent_channels=channels, block_out_channels=blocks + blocks[-1:],
                                      scaling_factor=1.0, shift_factor=0.0, force_upcast=False)

    def _stats(self, like: Any) -> tuple[Any, Any]:
        bn = self.inner.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.inner.config.batch_norm_eps).to(like.device,
                                                                                                  like.dtype)
        return mean, std

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist.mean``: normalised packed latents [B, 128, H/16, W/16] of images [B, 3, H, W] in -1..1."""
        raw = patchify(self.inner.encode(x).latent_dist.mode())
        mean, std = self._stats(raw)
        z = (raw - mean) / std
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, mode=lambda: z, sample=lambda generator=None: z))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: images [B, 3, H, W] in -1..1 of normalised packed latents."""
        mean, std = self._stats(z)
        img = self.inner.decode(unpatchify(z * std + mean)).sample
        return SimpleNamespace(sample=img) if return_dict else (img,)

    # diffusers' AutoencoderKL tiling attributes (what VAEDecodeTiled/VAEEncodeTiled set), mapped onto the inner
    # VAE, whose latent cells are 8 pixels (the 2×2 patches are folded in around it)
    @property
    def tile_sample_min_size(self) -> int:
        """Tile size in pixels."""
        return int(self.inner.tile_sample_min_size)

    @tile_sample_min_size.setter
    def tile_sample_min_size(self, value: int) -> None:
        self.inner.tile_sample_min_size = int(value)
        self.inner.tile_latent_min_size = max(1, int(value) // 8)

    @property
    def tile_latent_min_size(self) -> int:
        """Tile size in the inner VAE's latent cells (follows from the pixel size)."""
        return int(self.inner.tile_latent_min_size)

    @tile_latent_min_size.setter
    def tile_latent_min_size(self, value: int) -> None:
        pass

    @property
    def tile_overlap_factor(self) -> float:
        """Overlap of neighbouring tiles as a fraction of the tile."""
        return float(self.inner.tile_overlap_factor)

    @tile_overlap_factor.setter
    def tile_overlap_factor(self, value: float) -> None:
        self.inner.tile_overlap_factor = float(value)


def _original_to_diffusers(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """diffusers' names for an original-layout (``encoder.down.N``) Flux.2 VAE state (``state`` is emptied)."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from ..loading import quiet_libraries

    for old, new in (("encoder.quant_conv.", "quant_conv."), ("decoder.post_quant_conv.", "post_quant_conv.")):
        for key in [k for k in state if k.startswith(old)]:
            state[new + key[len(old):]] = state.pop(key)
    bn = {k: state.pop(k) for k in _BN if k in state}
    with quiet_libraries():
        out = convert_ldm_vae_checkpoint(state, config)
    state.clear()
    out.update(bn)
    return out


def _blocks(state: dict[str, Any]) -> tuple[list[int], int]:
    """(block_out_channels, layers_per_block) of the encoder, in either layout."""
    diffusers = any(k.startswith("encoder.down_blocks.") for k in state)
    fmt = "encoder.down_blocks.{}.resnets.{}.conv1.weight" if diffusers else "encoder.down.{}.block.{}.conv1.weight"
    widths, i = [], 0
    while fmt.format(i, 0) in state:
        widths.append(int(state[fmt.format(i, 0)].shape[0]))
        i += 1
    layers = 0
    while fmt.format(0, layers) in state:
        layers += 1
    return widths, layers


def _config(state: dict[str, Any], name: str) -> dict[str, Any]:
    config = shipped_config("vae")
    conv = state.get("decoder.conv_in.weight")
    widths, layers = _blocks(state)
    if conv is None or not widths:
        raise UnknownModelError(f"{name} lacks the Flux.2 VAE's encoder blocks or decoder input convolution; the "
                                "file is incomplete")
    latent = int(conv.shape[1])
    if int(state["bn.running_mean"].shape[0]) != 4 * latent:
        raise UnknownModelError(f"{name}: its batch-norm statistics have {state['bn.running_mean'].shape[0]} "
                                f"channels, not 4 × {latent}; this is not a Flux.2 VAE")
    config.update(latent_channels=latent, block_out_channels=widths, layers_per_block=layers,
                  down_block_types=["DownEncoderBlock2D"] * len(widths),
                  up_block_types=["UpDecoderBlock2D"] * len(widths),
                  norm_num_groups=min(int(config["norm_num_groups"]), min(widths)))
    return config


def is_flux2_vae(keys: Any) -> bool:
    """``families.VAE_FILES`` detector: a Flux.2 VAE's tensor names."""
    return is_flux2_vae_keys(keys)


def flux2_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel | None:
    """VAE from a Flux.2 VAE's tensors (``state`` is emptied); None when they are not a Flux.2 VAE's."""
    from diffusers import AutoencoderKLFlux2

    from ..flow.loading import filled_model

    if not is_flux2_vae_keys(state):
        return None
    state = {k.removeprefix("vae."): v for k, v in state.items()}
    config = _config(state, name)
    if not any(".down_blocks." in k for k in state):
        state = _original_to_diffusers(state, config)
    state.setdefault("bn.num_batches_tracked", torch.tensor(0))
    inner = filled_model(AutoencoderKLFlux2, config, state, name, dtype)
    return VAEModel(vae=Flux2VAE(inner).eval(), scaling_factor=1.0, shift_factor=0.0, source=name)


__all__ = ["Flux2VAE", "flux2_vae_from_state", "is_flux2_vae", "patchify", "unpatchify"]
