"""The HunyuanVideo 1.0 video VAE (``AutoencoderKLHunyuanVideo``: causal 3D convolutions, 16 channels, 8× spatial,
4× temporal compression), behind the image-VAE interface the latent nodes use.

- Video latents ``[B, 16, T, h, w]`` (raw, unscaled: the MODEL scales them by 0.476986): ``decode`` returns every
  frame of every video as one image batch ``[B · (4(T - 1) + 1), 3, H, W]``, so VAEDecode yields the frames.
- Images ``[N, 3, H, W]`` (VAEEncode, HunyuanImageToVideo): the batch is one video of N frames, as ComfyUI encodes
  an image batch with a video VAE: ``[1, 16, (N - 1) // 4 + 1, H/8, W/8]``.
- Image latents ``[B, 16, h, w]``: each decodes as a one-frame video.
Files: ComfyUI's (its LDM-style names with 3D convolutions: ``decoder.up.0.block.0.conv1.conv``,
``mid.attn_1.q`` as 1×1×1 convolutions) or diffusers' (the original release uses diffusers' names). Tiling
(VAEDecodeTiled) maps onto diffusers' spatial tiles as for the Wan VAE (``WanVideoVAE``'s properties).
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import torch

from ..detect import UnknownModelError
from ..types import VAEModel
from ..video_models.wan_vae import WanVideoVAE
from .files import shipped_config

_LDM = ("decoder.conv_in.conv.weight", "decoder.mid.attn_1.q.weight", "encoder.down.0.block.0.conv1.conv.weight")
_DIFFUSERS = ("decoder.conv_in.conv.weight", "decoder.mid_block.attentions.0.to_q.weight",
              "encoder.down_blocks.0.resnets.0.conv1.conv.weight")


def is_hunyuan_video_vae(keys: Any) -> bool:
    """Whether tensor names are a HunyuanVideo video VAE's (ComfyUI's or diffusers' layout)."""
    keys = set(keys)
    return all(k in keys for k in _LDM) or all(k in keys for k in _DIFFUSERS)


class HunyuanVideoVAE(WanVideoVAE):
    """An ``AutoencoderKLHunyuanVideo`` behind the image-VAE interface (raw latents; see the module docstring)."""

    #: VAEEncode(Tiled) encodes an IMAGE batch as one clip (ComfyUI's video-VAE convention), not image by image
    images_are_frames = True

    def __init__(self, inner: Any) -> None:
        torch.nn.Module.__init__(self)
        self.inner = inner
        cfg = inner.config
        self.config = SimpleNamespace(latent_channels=int(cfg.latent_channels), block_out_channels=tuple(
            cfg.block_out_channels), scaling_factor=float(cfg.scaling_factor), shift_factor=0.0, force_upcast=False)

    def encode_video(self, frames: Any) -> Any:
        """Raw posterior mean ``[1, 16, T, h, w]`` of one video's frames ``[N, 3, H, W]`` in -1..1."""
        return self.inner.encode(frames.movedim(0, 1).unsqueeze(0)).latent_dist.mean

    def encode(self, x: Any, return_dict: bool = True) -> Any:
        """``.latent_dist``: of videos ``[B, 3, T, H, W]``, or of an image batch taken as one video's frames."""
        if x.dim() == 5:
            return SimpleNamespace(latent_dist=self.inner.encode(x).latent_dist)
        mean = self.encode_video(x)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, mode=lambda: mean))

    def decode(self, z: Any, return_dict: bool = True) -> Any:
        """``.sample``: the frames ``[B · F, 3, H, W]`` of raw video latents (image latents: one frame each)."""
        video = z if z.dim() == 5 else z.unsqueeze(2)
        frames = self.inner.decode(video).sample.movedim(2, 1).flatten(0, 1)
        return SimpleNamespace(sample=frames) if return_dict else (frames,)


def _ldm_to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Diffusers names for a HunyuanVideo VAE in ComfyUI's LDM-style layout (``state`` is emptied)."""
    ups = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    last = max(ups) if ups else 3
    attn = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    out: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        name = key.replace("nin_shortcut", "conv_shortcut").replace(".norm_out.", ".conv_norm_out.")
        name = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", name)
        name = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", name)
        name = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{last - int(m.group(1))}.resnets.",
                      name)
        name = re.sub(r"^decoder\.up\.(\d+)\.upsample\.",
                      lambda m: f"decoder.up_blocks.{last - int(m.group(1))}.upsamplers.0.", name)
        name = re.sub(r"\.mid\.block_(\d+)\.", lambda m: f".mid_block.resnets.{int(m.group(1)) - 1}.", name)
        m = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", name)
        if m:
            name = f"{m.group(1)}.mid_block.attentions.0.{attn[m.group(2)]}.{m.group(3)}"
            if m.group(2) != "norm" and m.group(3) == "weight":
                tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        out[name] = tensor
    return out


def _config(state: dict[str, Any], name: str) -> dict[str, Any]:
    conv = state.get("decoder.conv_in.conv.weight")
    first = state.get("encoder.conv_in.conv.weight")
    if conv is None or first is None:
        raise UnknownModelError(f"{name} lacks the HunyuanVideo VAE's input convolutions; the file is incomplete")
    if int(conv.shape[1]) != 16:
        raise UnknownModelError(f"{name} has {int(conv.shape[1])} latent channels: it is the HunyuanVideo 1.5 (or "
                                "another) VAE, which this version does not load; use hunyuan_video_vae_bf16")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
    widths = [int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.conv.weight"].shape[0]) for i in blocks]
    layers = len({m.group(1) for k in state if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k))})
    groups = shipped_config("vae")["norm_num_groups"]
    while widths[0] % groups:
        groups //= 2
    return dict(shipped_config("vae"), block_out_channels=widths, layers_per_block=layers, norm_num_groups=groups,
                down_block_types=["HunyuanVideoDownBlock3D"] * len(widths),
                up_block_types=["HunyuanVideoUpBlock3D"] * len(widths),
                mid_block_add_attention="decoder.mid_block.attentions.0.to_q.weight" in state)


def hunyuan_video_vae_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> VAEModel | None:
    """VAE from a HunyuanVideo VAE's tensors (``state`` is emptied); None when they are not one's."""
    from diffusers import AutoencoderKLHunyuanVideo

    from ..flow.loading import filled_model

    if not is_hunyuan_video_vae(state):
        return None
    if all(k in state for k in _LDM):
        state = _ldm_to_diffusers(state)
    inner = filled_model(AutoencoderKLHunyuanVideo, _config(state, name), state, name, dtype)
    wrapped = HunyuanVideoVAE(inner).eval()
    return VAEModel(vae=wrapped, scaling_factor=wrapped.config.scaling_factor, shift_factor=0.0, source=name)


__all__ = ["HunyuanVideoVAE", "hunyuan_video_vae_from_state", "is_hunyuan_video_vae"]
