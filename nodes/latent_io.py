"""Latent files and tiled VAE passes: SaveLatent/LoadLatent (ComfyUI's ``.latent`` safetensors), VAEDecodeTiled,
VAEEncodeTiled, and InpaintModelConditioning.

- ``.latent`` files are ComfyUI's: safetensors with ``latent_tensor`` (unscaled samples) and an empty
  ``latent_format_version_0`` marker; files without the marker are from before ComfyUI stored unscaled latents and
  are divided by SD's 0.18215, as ComfyUI does. The prompt and workflow go in the safetensors metadata.
- Tiled passes on images run diffusers' own tiling (``AutoencoderKL``'s tiled encode/decode with blended overlaps)
  with the node's tile size and overlap; an image that fits in one tile is encoded or decoded exactly as by
  VAEEncode/VAEDecode.
- Tiled passes on videos (Wan 2.1/2.2 and LTX-Video VAEs) cut the clip into boxes in time and space as ComfyUI does
  (``temporal_size``/``temporal_overlap`` in frames, ``decode_video_tiled``), so a long clip decodes in memory
  bounded by the box; a clip that fits in one box is decoded exactly as by VAEDecode.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any, Iterator

from nodegraph.api import (Boolean, Combo, Int, Link, Node, NodeOutput, Output, String, decode_video_tiled,
                           encode_video_tiled, hookimpl, safe_join, temporal_compression)

from .latent import _crop_to, _param_dtype, _vae_on_device

LATENT_SUFFIX = ".latent"
#: ComfyUI's scale of latents saved before the format marker existed (SD1's scaling factor).
LEGACY_SCALE = 0.18215
_VIDEO_ONLY = "Only used for video VAEs: "


def input_latents(config: Any) -> list[str]:
    """``.latent`` files in the input folder (LoadLatent's combo)."""
    if config is None or not config.input_dir.is_dir():
        return []
    root = config.input_dir
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{LATENT_SUFFIX}") if p.is_file())


class SaveLatent(Node):
    """Save latents as a ComfyUI ``.latent`` file (safetensors) in the output folder, with the workflow."""

    CATEGORY = "_for_testing"
    OUTPUT_NODE = True
    INPUTS = {"samples": Link("LATENT"), "filename_prefix": String("latents/ComfyUI")}
    OUTPUTS = ()

    def execute(self, ctx, samples: dict, filename_prefix: str = "latents/ComfyUI"):
        import torch
        from safetensors.torch import save

        metadata = {"prompt": json.dumps(ctx.prompt)}
        metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in ctx.extra_pnginfo.items()})
        tensors = {"latent_tensor": samples["samples"].contiguous().cpu(),
                   "latent_format_version_0": torch.tensor([])}
        handle, entry = ctx.files.create(filename_prefix, LATENT_SUFFIX, "output")
        with handle:
            handle.write(save(tensors, metadata=metadata))
        return NodeOutput((), {"latents": [entry]})


class LoadLatent(Node):
    """Load latents from a ``.latent`` file in the input folder."""

    CATEGORY = "_for_testing"
    INPUTS = {"latent": Combo(input_latents, tooltip="a .latent file in the input folder")}
    OUTPUTS = (Output("LATENT"),)

    @classmethod
    def fingerprint(cls, config, **constants):
        path = safe_join(config.input_dir, constants["latent"])
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"

    def execute(self, ctx, latent: str):
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = ctx.files.input_path(latent)
        try:
            tensors = load(path.read_bytes())
        except (SafetensorError, ValueError) as exc:
            raise ValueError(f"LoadLatent: {latent!r} is not a safetensors .latent file ({exc}); save latents with "
                             "SaveLatent") from None
        if "latent_tensor" not in tensors:
            held = ", ".join(tensors) or "nothing"
            raise ValueError(f"LoadLatent: {latent!r} has no 'latent_tensor' (it holds {held}); save latents with "
                             "SaveLatent")
        scale = 1.0 if "latent_format_version_0" in tensors else 1.0 / LEGACY_SCALE
        return ({"samples": tensors["latent_tensor"].float() * scale},)


@contextlib.contextmanager
def _tiling(vae: Any, tile_size: int, overlap: int, downscale: int) -> Iterator[None]:
    """diffusers' tiling on ``vae`` (an AutoencoderKL) with a tile of ``tile_size`` pixels, for the duration."""
    if not hasattr(vae, "tile_sample_min_size"):
        raise ValueError(f"this VAE ({type(vae).__name__}) has no tiled mode; use VAEDecode/VAEEncode")
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
    saved = {name: getattr(vae, name) for name in names}
    overlap = min(overlap, tile_size // 4)  # ComfyUI's bound: a quarter of the tile at most
    vae.use_tiling = True
    vae.tile_sample_min_size = tile_size
    vae.tile_latent_min_size = max(1, tile_size // downscale)
    vae.tile_overlap_factor = overlap / tile_size
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


_TILE_COMMON = {
    "overlap": Int(64, min=0, max=4096, step=32),
    "temporal_size": Int(64, min=8, max=4096, step=4,
                         tooltip=_VIDEO_ONLY + "Amount of frames to decode at a time."),
    "temporal_overlap": Int(8, min=4, max=4096, step=4, tooltip=_VIDEO_ONLY + "Amount of frames to overlap."),
}


class VAEDecodeTiled(Node):
    """Decode latents tile by tile (diffusers' blended tiling), so large images fit in memory."""

    DISPLAY_NAME = "VAE Decode (Tiled)"
    CATEGORY = "_for_testing"
    INPUTS = {"samples": Link("LATENT"), "vae": Link("VAE"),
              "tile_size": Int(512, min=64, max=4096, step=32), **_TILE_COMMON}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, samples: dict, vae: Any, tile_size: int, overlap: int = 64, temporal_size: int = 64,
                temporal_overlap: int = 8):
        z = samples["samples"]
        with ctx.models.use(vae) as (vae,):
            channels = int(vae.vae.config.latent_channels)
            if z.shape[1] != channels:
                raise ValueError(f"VAEDecodeTiled: the latent has {z.shape[1]} channels but this VAE decodes "
                                 f"{channels}; use the VAE of the checkpoint that made the latent")
            frames = temporal_compression(vae.vae) if z.dim() == 5 else None
            if frames is not None:
                with _vae_on_device(ctx, vae) as device:
                    dtype = _param_dtype(vae.vae)

                    def decode(box: Any) -> Any:
                        return vae.vae.decode(box.to(device, dtype)).sample.movedim(0, 1).unsqueeze(0)

                    video = decode_video_tiled(decode, z, frames, vae.downscale, tile_size, overlap, temporal_size,
                                               temporal_overlap)
                img = video.movedim(1, 2).flatten(0, 1)
            else:
                with _vae_on_device(ctx, vae) as device, _tiling(vae.vae, tile_size, overlap, vae.downscale):
                    img = vae.vae.decode(z.to(device, _param_dtype(vae.vae))).sample.float().cpu()
        return ((img / 2.0 + 0.5).clamp(0.0, 1.0).movedim(1, -1).contiguous(),)


class VAEEncodeTiled(Node):
    """Encode images tile by tile (diffusers' blended tiling), so large images fit in memory."""

    DISPLAY_NAME = "VAE Encode (Tiled)"
    CATEGORY = "_for_testing"
    INPUTS = {"pixels": Link("IMAGE"), "vae": Link("VAE"), "tile_size": Int(512, min=64, max=4096, step=64),
              **_TILE_COMMON,
              "temporal_size": Int(64, min=8, max=4096, step=4,
                                   tooltip=_VIDEO_ONLY + "Amount of frames to encode at a time.")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, pixels: Any, vae: Any, tile_size: int, overlap: int = 64, temporal_size: int = 64,
                temporal_overlap: int = 8):
        with ctx.models.use(vae) as (vae,):
            px = _crop_to(pixels, vae.downscale)[..., :3]
            # VAEEncode's convention: a video VAE whose image batch is one clip (LTX-Video) tiles in time too;
            # the Wan VAE encodes images one by one (Qwen-Image's latents)
            frames = temporal_compression(vae.vae)
            if frames is not None and getattr(vae.vae, "images_are_frames", True):
                with _vae_on_device(ctx, vae) as device:
                    dtype = _param_dtype(vae.vae)

                    def encode(box: Any) -> Any:
                        return vae.vae.encode(box.to(device, dtype)).latent_dist.mean

                    video = px.movedim(-1, 0).unsqueeze(0) * 2.0 - 1.0  # the IMAGE batch as one clip
                    z = encode_video_tiled(encode, video, frames, vae.downscale,
                                           int(vae.vae.config.latent_channels), tile_size, overlap, temporal_size,
                                           temporal_overlap)
                return ({"samples": z, "downscale": vae.downscale},)
            with _vae_on_device(ctx, vae) as device, _tiling(vae.vae, tile_size, overlap, vae.downscale):
                x = px.movedim(-1, 1).to(device, _param_dtype(vae.vae)) * 2.0 - 1.0
                z = vae.vae.encode(x).latent_dist.mean.float().cpu()
            return ({"samples": z, "downscale": vae.downscale},)


class InpaintModelConditioning(Node):
    """Encode an image to inpaint: the latent with its noise mask, and the masked image in the conditioning
    (``concat_latent_image``/``concat_mask``, read by inpainting models; other models use the noise mask)."""

    CATEGORY = "conditioning/inpaint"
    INPUTS = {"positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "vae": Link("VAE"),
              "pixels": Link("IMAGE"), "mask": Link("MASK"),
              "noise_mask": Boolean(True, tooltip="Add a noise mask to the latent so sampling will only happen within "
                                    "the mask. Might improve results or completely break things depending on the "
                                    "model.")}
    OUTPUTS = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def execute(self, ctx, positive: list, negative: list, vae: Any, pixels: Any, mask: Any, noise_mask: bool = True):
        import torch.nn.functional as F

        from .latent import encode

        h, w = pixels.shape[1], pixels.shape[2]
        m = F.interpolate(mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1]), size=(h, w),
                          mode="bilinear")
        with ctx.models.use(vae) as (vae,):
            d = vae.downscale
            nh, nw = (h // d) * d, (w // d) * d
            y0, x0 = (h % d) // 2, (w % d) // 2
            crop_m = m[:, :, y0:y0 + nh, x0:x0 + nw]
            keep = (1.0 - crop_m.round()).squeeze(1).unsqueeze(-1)
            masked = (pixels[:, y0:y0 + nh, x0:x0 + nw, :3] - 0.5) * keep + 0.5
            concat = encode(ctx, vae, masked)
            original = encode(ctx, vae, pixels)
        extras = {"concat_latent_image": concat, "concat_mask": crop_m}
        out = [[(emb, {**info, **extras}) for emb, info in cond] for cond in (positive, negative)]
        latent = {"samples": original, "downscale": vae.downscale}
        if noise_mask:
            latent["noise_mask"] = crop_m
        return (out[0], out[1], latent)


@hookimpl
def nodegraph_nodes():
    """Latent files, tiled VAE passes and inpainting conditioning."""
    return [SaveLatent, LoadLatent, VAEDecodeTiled, VAEEncodeTiled, InpaintModelConditioning]
