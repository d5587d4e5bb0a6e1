"""The Wan 2.2 VAE (``AutoencoderKLWan`` with 48 latent channels, residual blocks, 2×2 patchified pixels:
16× spatial and 4× temporal compression), used by Wan 2.2 TI2V-5B.

Files: ComfyUI's ``wan2.2_vae.safetensors`` (the original Wan 2.2 names: ``encoder.downsamples.<i>.downsamples.<j>``,
``decoder.upsamples.<i>.upsamples.<j>``) or diffusers' layout (``encoder.down_blocks.<i>.resnets.<j>``). The block
names are renamed here; the names Wan 2.1 shares (middle, head, quant convolutions) go through diffusers' Wan 2.1
converter. The config is ``configs/wan/vae_wan2.2.json`` with the widths read from the shapes.
"""

from __future__ import annotations

import re
from typing import Any

from ..detect import UnknownModelError
from .wan_files import shipped_config

#: A tensor only the Wan 2.2 VAE has, in the original and in diffusers' layout.
ORIGINAL_MARK = "decoder.upsamples.0.upsamples.0.residual.2.weight"
DIFFUSERS_MARK = "encoder.down_blocks.0.resnets.0.norm1.gamma"
_BLOCK = re.compile(r"^(encoder|decoder)\.(downsamples|upsamples)\.(\d+)\.(?:downsamples|upsamples)\.(\d+)\."
                    r"(residual\.\d+|shortcut|resample\.1|time_conv)\.(\w+)$")
_RESNET = {"residual.0": "norm1", "residual.2": "conv1", "residual.3": "norm2", "residual.6": "conv2",
           "shortcut": "conv_shortcut"}


def is_wan22_vae(keys: Any) -> bool:
    """Whether tensor names are the Wan 2.2 VAE's (original or diffusers layout)."""
    keys = set(keys)
    return ORIGINAL_MARK in keys or DIFFUSERS_MARK in keys


def _block_name(key: str) -> str | None:
    """The diffusers name of an original Wan 2.2 encoder/decoder block tensor, else None."""
    m = _BLOCK.match(key)
    if m is None:
        return None
    side, _, i, j, part, leaf = m.groups()
    blocks, sampler = ("down_blocks", "downsampler") if side == "encoder" else ("up_blocks", "upsampler")
    if part in _RESNET:
        return f"{side}.{blocks}.{i}.resnets.{j}.{_RESNET[part]}.{leaf}"
    return f"{side}.{blocks}.{i}.{sampler}.{part}.{leaf}"


def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Diffusers names for a Wan 2.2 VAE state dict in the original layout (diffusers-named ones are kept)."""
    if ORIGINAL_MARK not in state:
        return state
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from ..loading import quiet_libraries

    renamed = {(_block_name(k) or k): v for k, v in state.items()}
    with quiet_libraries():
        return convert_wan_vae_to_diffusers(renamed)


def config_from_state(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``AutoencoderKLWan`` config of a diffusers-named Wan 2.2 VAE (widths from the shapes)."""
    first = state.get("encoder.conv_in.weight")
    dec = state.get("decoder.conv_in.weight")
    if first is None or dec is None:
        raise UnknownModelError(f"{name} lacks the Wan 2.2 VAE's encoder/decoder input convolutions; the file is "
                                "incomplete")
    cfg = shipped_config("vae_wan2.2")
    patch = int(cfg["patch_size"])
    if int(first.shape[1]) != 3 * patch * patch:
        raise UnknownModelError(f"{name}: the encoder takes {int(first.shape[1])} input channels, not the "
                                f"{3 * patch * patch} of the Wan 2.2 VAE's {patch}×{patch} patches")
    z_dim = int(dec.shape[1])
    if z_dim != len(cfg["latents_mean"]):
        raise UnknownModelError(f"{name} has {z_dim} latent channels; the Wan 2.2 VAE has "
                                f"{len(cfg['latents_mean'])}")
    return dict(cfg, base_dim=int(first.shape[0]), decoder_base_dim=int(dec.shape[0]) // 4, z_dim=z_dim)


__all__ = ["DIFFUSERS_MARK", "ORIGINAL_MARK", "config_from_state", "is_wan22_vae", "to_diffusers"]
