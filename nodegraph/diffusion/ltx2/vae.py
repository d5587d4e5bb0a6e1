"""The LTX-2 video VAE (``AutoencoderKLLTX2Video``: 128 channels, 32× spatial, 8× temporal) behind the image-VAE
interface, through LTX-Video's wrapper (``ltx.vae.LTXVideoVAE``: normalised latents, frames as an IMAGE batch).

Files: the original/ComfyUI layout under ``vae.`` (``per_channel_statistics``, ``down_blocks.N``; converted with
diffusers' converter) or diffusers' layout (``latents_mean``, ``encoder.down_blocks.N.downsamplers``). The config is
read from the shapes (widths, blocks, layers, patch size) over the shipped one.
"""

from __future__ import annotations

from typing import Any

from ..detect import UnknownModelError
from ..types import VAEModel
from .files import shipped_config

_STATS = "per_channel_statistics.mean-of-means"


def _count(state: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})


def _res(state: dict[str, Any], prefix: str) -> int:
    """Channels of the first resnet under ``prefix``."""
    return int(state[prefix + "resnets.0.conv1.conv.weight"].shape[0])


def vae_config(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``AutoencoderKLLTX2Video`` config from diffusers-named tensors (sizes from the shapes)."""
    first = state.get("encoder.conv_in.conv.weight")
    if first is None or "decoder.conv_in.conv.weight" not in state or "encoder.mid_block.resnets.0.conv1.conv.weight" \
            not in state:
        raise UnknownModelError(f"{name} lacks the LTX-2 video VAE's encoder/decoder convolutions; the file is "
                                "incomplete")
    levels = _count(state, "encoder.down_blocks.")
    ups = _count(state, "decoder.up_blocks.")
    base = shipped_config("video_vae")
    if levels != len(base["block_out_channels"]) or ups != len(base["decoder_block_out_channels"]):
        raise UnknownModelError(f"{name}: {levels} encoder / {ups} decoder blocks, not LTX-2's "
                                f"{len(base['block_out_channels'])} / {len(base['decoder_block_out_channels'])}")
    enc = [_count(state, f"encoder.down_blocks.{i}.resnets.") for i in range(levels)]
    dec = [_count(state, f"decoder.up_blocks.{i}.resnets.") for i in range(ups)]
    return dict(base, latent_channels=int(state["decoder.conv_in.conv.weight"].shape[1]),
                patch_size=round((int(first.shape[1]) // 3) ** 0.5),
                block_out_channels=[_res(state, f"encoder.down_blocks.{i}.") for i in range(1, levels)]
                + [_res(state, "encoder.mid_block.")],
                decoder_block_out_channels=[2 * _res(state, f"decoder.up_blocks.{i}.") for i in reversed(range(ups))],
                layers_per_block=enc + [_count(state, "encoder.mid_block.resnets.")],
                decoder_layers_per_block=dec[::-1] + [_count(state, "decoder.mid_block.resnets.")],
                timestep_conditioning=any(k.startswith("decoder.time_embedder.") for k in state))


def is_ltx2_vae_state(keys: Any) -> bool:
    """Whether tensor names are an LTX-2 video VAE's in diffusers layout (as written for LTX-2)."""
    keys = set(keys)
    return "latents_mean" in keys and "encoder.down_blocks.0.downsamplers.0.conv.conv.weight" in keys \
        and "decoder.up_blocks.0.upsamplers.0.conv.conv.weight" in keys


def ltx2_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel:
    """VAE from an LTX-2 video VAE's tensors, original names (``vae.`` or bare) or diffusers' (``state`` emptied)."""
    from diffusers import AutoencoderKLLTX2Video

    from ..flow.loading import filled_model
    from ..loading import quiet_libraries
    from ..ltx.vae import LTXVideoVAE

    if _STATS in state or "vae." + _STATS in state:
        from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

        with quiet_libraries():
            state = convert_ltx2_vae_to_diffusers(state)
    inner = filled_model(AutoencoderKLLTX2Video, vae_config(state, name), state, name, dtype)
    return VAEModel(vae=LTXVideoVAE(inner).eval(), scaling_factor=1.0, shift_factor=0.0, source=name)


__all__ = ["is_ltx2_vae_state", "ltx2_vae_from_state", "vae_config"]
