"""The Mochi video VAE (``AutoencoderKLMochi``: 12 channels, 8× spatial, 6× temporal), behind the image-VAE interface.

- Latents are normalised per channel as ComfyUI's Mochi latent format does (``(z - latents_mean) / latents_std``,
  its 12 published means and deviations), so the MODEL samples them with scale 1 (``files.MOCHI_LATENT``).
- Video latents ``[B, 12, T, h, w]``: ``decode`` returns every frame of every video as one image batch
  ``[B · (6(T - 1) + 1), 3, H, W]``, so VAEDecode yields the frames; image latents ``[B, 12, h, w]`` decode as one
  frame.
- Images ``[N, 3, H, W]`` (VAEEncode): the batch is one video of N frames, ``[1, 12, (N - 1) // 6 + 1, H/8, W/8]``.
Files: ComfyUI's ``mochi_vae.safetensors`` (Genmo's module names: ``decoder.blocks.*``, ``encoder.layers.*``; Genmo's
separate decoder/encoder files load too), or diffusers' layout. The mapping is that of diffusers' Mochi conversion
script, written for any depth. VAEDecodeTiled maps onto the shared spatial/temporal tiling like the Wan VAE.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..types import VAEModel
from ..video_models.wan_vae import WanVideoVAE
from .files import shipped_config

_GENMO = ("decoder.blocks.0.0.weight", "decoder.output_proj.weight")
_GENMO_ENCODER = "encoder.layers.0.weight"
_DIFFUSERS = ("decoder.conv_in.weight", "decoder.block_in.resnets.0.conv1.conv.weight")
_STACK = {"0": "norm1.norm_layer", "2": "conv1.conv", "3": "norm2.norm_layer", "5": "conv2.conv"}


def _bare(keys: Any) -> set[str]:
    """Tensor names, Genmo's bare decoder/encoder files given their ``decoder.``/``encoder.`` prefix (as ComfyUI)."""
    keys = set(keys)
    if "blocks.2.blocks.3.stack.5.weight" in keys or "blocks.0.0.weight" in keys:
        return {"decoder." + k for k in keys}
    if "layers.0.weight" in keys and "output_proj.weight" in keys:
        return {"encoder." + k for k in keys}
    return keys


def is_mochi_vae(keys: Any) -> bool:
    """Whether tensor names are a Mochi VAE's (ComfyUI's/Genmo's layout, a bare Genmo decoder, or diffusers')."""
    keys = _bare(keys)
    return all(k in keys for k in _GENMO) or all(k in keys for k in _DIFFUSERS)


class MochiVideoVAE(WanVideoVAE):
    """An ``AutoencoderKLMochi`` behind the image-VAE interface (normalised latents; see the module docstring)."""

    #: VAEEncode(Tiled) encodes an IMAGE batch as one clip (ComfyUI's video-VAE convention), not image by image
    images_are_frames = True

    def __init__(self, inner: Any) -> None:
        torch.nn.Module.__init__(self)
        self.inner = inner
        cfg = inner.config
        shape = (1, int(cfg.latent_channels), 1, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape),
                             persistent=False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape),
                             persistent=False)
        self.temporal_compression = math.prod(int(n) for n in cfg.temporal_expansions)  # 6 (VAEDecodeTiled)
        self.spatial = math.prod(int(n) for n in cfg.spatial_expansions)  # 8
        self.config = SimpleNamespace(latent_channels=int(cfg.latent_channels), block_out_channels=tuple(
            cfg.decoder_block_out_channels), scaling_factor=1.0, shift_factor=0.0, force_upcast=False)

    def _normalise(self, raw: Any) -> Any:
        return (raw - self.latents_mean.to(raw)) / self.latents_std.to(raw)

    def encode_video(self, frames: Any) -> Any:
        """Normalised posterior mean ``[1, 12, T, h, w]`` of one video's frames ``[N, 3, H, W]`` in -1..1."""
        if self.inner.encoder is None:
            raise ValueError("this Mochi VAE file holds only the decoder; VAEEncode needs mochi_vae.safetensors "
                             "(encoder and decoder)")
        return self._normalise(self.inner.encode(frames.movedim(0, 1).unsqueeze(0)).latent_dist.mean)

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist`` (normalised): of videos ``[B, 3, T, H, W]``, or of an image batch taken as one video."""
        if x.dim() == 5:
            mean = self._normalise(self.inner.encode(x).latent_dist.mean)
        else:
            mean = self.encode_video(x)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, mode=lambda: mean))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: the frames ``[B · F, 3, H, W]`` of normalised video latents (image latents: one frame each)."""
        video = z if z.dim() == 5 else z.unsqueeze(2)
        raw = video * self.latents_std.to(video) + self.latents_mean.to(video)
        frames = self.inner.decode(raw).sample.movedim(2, 1).flatten(0, 1)
        return SimpleNamespace(sample=frames) if return_dict else (frames,)


def _resnet(prefix: str, index: Any, layer: str) -> str:
    return f"{prefix}resnets.{index}.{_STACK[layer]}."


def _decoder_name(name: str, last: int) -> str | None:
    """Diffusers' name of a Genmo decoder tensor (``name`` without ``decoder.``; ``last`` = index of block_out)."""
    if name.startswith("blocks.0.0."):
        return "conv_in." + name[len("blocks.0.0."):]
    if m := re.match(r"blocks\.0\.(\d+)\.stack\.(\d)\.(.*)$", name):
        return _resnet("block_in.", int(m.group(1)) - 1, m.group(2)) + m.group(3)
    if m := re.match(rf"blocks\.{last}\.(\d+)\.stack\.(\d)\.(.*)$", name):
        return _resnet("block_out.", m.group(1), m.group(2)) + m.group(3)
    if m := re.match(r"blocks\.(\d+)\.blocks\.(\d+)\.stack\.(\d)\.(.*)$", name):
        return _resnet(f"up_blocks.{int(m.group(1)) - 1}.", m.group(2), m.group(3)) + m.group(4)
    if m := re.match(r"blocks\.(\d+)\.proj\.(.*)$", name):
        return f"up_blocks.{int(m.group(1)) - 1}.proj.{m.group(2)}"
    if name.startswith("output_proj."):
        return "proj_out." + name[len("output_proj."):]
    return None


def _encoder_names(name: str, tensor: Any, downs: list[int]) -> list[tuple[str, Any]] | None:
    """Diffusers' names of a Genmo encoder tensor (``downs``: the ``layers.N`` indices that are down blocks)."""
    if name.startswith("layers.0."):
        return [("proj_in." + name[len("layers.0."):], tensor)]
    if name.startswith("output_norm."):
        return [("norm_out.norm_layer." + name[len("output_norm."):], tensor)]
    if name.startswith("output_proj."):
        return [("proj_out." + name[len("output_proj."):], tensor)]
    m = re.match(r"layers\.(\d+)\.(?:layers\.(\d+)\.)?(.*)$", name)
    if m is None:
        return None
    n, sub, rest = int(m.group(1)), m.group(2), m.group(3)
    if n in downs:
        if sub is None:
            return None
        base, index = f"down_blocks.{downs.index(n)}.", int(sub) - 1
        if index < 0:
            return [(f"{base}conv_in.conv.{rest}", tensor)]
    elif sub is not None:
        return None
    elif n < downs[0]:
        base, index = "block_in.", n - 1
    else:
        base, index = "block_out.", n - downs[-1] - 1
    if s := re.match(r"stack\.(\d)\.(.*)$", rest):
        return [(_resnet(base, index, s.group(1)) + s.group(2), tensor)]
    if rest.startswith("attn_block.norm."):
        return [(f"{base}norms.{index}.norm_layer.{rest.rsplit('.', 1)[1]}", tensor)]
    if rest == "attn_block.attn.qkv.weight":
        return [(f"{base}attentions.{index}.to_{p}.weight", t) for p, t in zip("qkv", tensor.chunk(3, dim=0))]
    if rest.startswith("attn_block.attn.out."):
        return [(f"{base}attentions.{index}.to_out.0.{rest.rsplit('.', 1)[1]}", tensor)]
    return None


def genmo_to_diffusers(state: dict[str, Any], name: str = "the VAE") -> dict[str, Any]:
    """Diffusers names for a Mochi VAE in ComfyUI's/Genmo's layout (``state`` is emptied); UnknownModelError names
    a tensor it does not know."""
    if "blocks.0.0.weight" in state or "layers.0.weight" in state:
        which = "decoder." if "blocks.0.0.weight" in state else "encoder."
        for key in list(state):
            state[which + key] = state.pop(key)
    last = max((int(m.group(1)) for k in state if (m := re.match(r"decoder\.blocks\.(\d+)\.", k))), default=4)
    downs = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.layers\.", k))})
    out: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        part, _, rest = key.partition(".")
        if part == "decoder":
            new = _decoder_name(rest, last)
            pairs = None if new is None else [(new, tensor)]
        else:
            pairs = _encoder_names(rest, tensor, downs) if part == "encoder" and downs else None
        if pairs is None:
            raise UnknownModelError(f"{name}: {key} is not a Mochi VAE tensor (ComfyUI/Genmo layout)")
        out.update((f"{part}.{k}", v) for k, v in pairs)
    return out


def _config(state: dict[str, Any], name: str) -> dict[str, Any]:
    conv = state.get("decoder.conv_in.weight")
    if conv is None:
        raise UnknownModelError(f"{name} lacks the Mochi VAE decoder's input convolution; the file is incomplete")
    if int(conv.shape[1]) != 12:
        raise UnknownModelError(f"{name} has {int(conv.shape[1])} latent channels, not Mochi's 12")
    ups = sorted({int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))})

    def count(prefix: str) -> int:
        rx = re.compile(re.escape(prefix) + r"resnets\.(\d+)\.")
        return len({m.group(1) for k in state if (m := rx.match(k))})

    dec = [int(state["decoder.block_out.resnets.0.conv1.conv.weight"].shape[0])] + [
        int(state[f"decoder.up_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0]) for i in reversed(ups)]
    layers = [count("decoder.block_out.")] + [count(f"decoder.up_blocks.{i}.") for i in reversed(ups)] + \
        [count("decoder.block_in.")]
    config = dict(shipped_config("vae"), decoder_block_out_channels=dec, layers_per_block=layers)
    enc_in = state.get("encoder.proj_in.weight")
    if enc_in is not None:
        downs = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
        config["encoder_block_out_channels"] = [int(enc_in.shape[0])] + [
            int(state[f"encoder.down_blocks.{i}.conv_in.conv.weight"].shape[0]) for i in downs]
        config["in_channels"] = int(enc_in.shape[1])
    return config


def mochi_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel | None:
    """VAE from a Mochi VAE's tensors (``state`` is emptied); None when they are not one's. A decoder-only file
    (Genmo's decoder.safetensors) decodes; VAEEncode on it says so."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLMochi

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    if not is_mochi_vae(state.keys()):
        return None
    if not all(k in state for k in _DIFFUSERS):
        state = genmo_to_diffusers(state, name)
    config = _config(state, name)
    with quiet_libraries(), init_empty_weights():
        inner = AutoencoderKLMochi.from_config(config)
    if "encoder.proj_in.weight" not in state:
        inner.encoder = None
    fill(inner, state, dtype or torch.float32, name)
    wrapped = MochiVideoVAE(inner).eval()
    return VAEModel(vae=wrapped, scaling_factor=1.0, shift_factor=0.0, source=name)


__all__ = ["MochiVideoVAE", "genmo_to_diffusers", "is_mochi_vae", "mochi_vae_from_state"]
