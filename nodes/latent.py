"""Latent nodes: empty latents, VAE encode/decode (and for inpainting), noise masks, latent resizing.

LATENT samples are unscaled VAE latents (see nodegraph.diffusion.types). EmptyLatentImage has no VAE input, so it
makes SD's 4 channels at 1/8 and records the pixel size it was asked for ("pixel_size"); KSampler re-creates such
an untouched empty latent in the shape its model expects (e.g. 1/4 for a VAE with three blocks).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from nodegraph.api import Combo, Float, Int, Link, Node, Output, hookimpl, resample, target_size

from .image_ops import CROP, MAX_SIZE

LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
DEFAULT_DOWNSCALE = 8


@contextlib.contextmanager
def _vae_on_device(ctx: Any, vae: Any) -> Iterator[Any]:
    """The VAE on the device (float32 when its config asks to upcast, as SDXL's does); yields the device."""
    import torch

    devices = ctx.devices
    with devices.use(vae.vae), torch.no_grad():
        if getattr(vae.vae.config, "force_upcast", False) and devices.dtype != torch.float32:
            vae.vae.to(dtype=torch.float32)
        yield devices.device


def _param_dtype(module: Any) -> Any:
    return next(module.parameters()).dtype


def _crop_to(pixels: Any, multiple: int) -> Any:
    """Centre-crop IMAGE [B, H, W, C] so that H and W are multiples of ``multiple``."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"the image is {w}x{h}, smaller than one latent cell ({multiple} pixels); scale it up")
    y, x = (h - nh) // 2, (w - nw) // 2
    return pixels[:, y:y + nh, x:x + nw, :]


def encode(ctx: Any, vae: Any, pixels: Any) -> Any:
    """IMAGE [B, H, W, 3] → unscaled latents (the posterior mean, so the same image gives the same latent)."""
    pixels = _crop_to(pixels, vae.downscale)[..., :3]
    with _vae_on_device(ctx, vae) as device:
        x = pixels.movedim(-1, 1).to(device, _param_dtype(vae.vae)) * 2.0 - 1.0
        return vae.vae.encode(x).latent_dist.mean.float().cpu()


class EmptyLatentImage(Node):
    """A batch of empty latents for text-to-image; KSampler fits it to its model's latent shape."""

    DISPLAY_NAME = "Empty Latent Image"
    CATEGORY = "latent"
    INPUTS = {"width": Int(512, min=16, max=MAX_SIZE, step=8, tooltip="image width in pixels"),
              "height": Int(512, min=16, max=MAX_SIZE, step=8, tooltip="image height in pixels"),
              "batch_size": Int(1, min=1, max=4096, step=None, tooltip="how many images")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, width: int, height: int, batch_size: int):
        import torch

        samples = torch.zeros(batch_size, 4, height // DEFAULT_DOWNSCALE, width // DEFAULT_DOWNSCALE)
        return ({"samples": samples, "pixel_size": (height, width), "downscale": DEFAULT_DOWNSCALE},)


class VAEDecode(Node):
    """Decode latents into images with a VAE."""

    DISPLAY_NAME = "VAE Decode"
    CATEGORY = "latent"
    INPUTS = {"samples": Link("LATENT", tooltip="the latents to decode"),
              "vae": Link("VAE", tooltip="the VAE the latents belong to")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, samples: dict, vae: Any):
        z = samples["samples"]
        with ctx.models.use(vae) as (vae,):
            channels = int(vae.vae.config.latent_channels)
            if z.shape[1] != channels:
                raise ValueError(f"the latent has {z.shape[1]} channels but this VAE decodes {channels}; use the "
                                 "VAE of the checkpoint that made the latent")
            with _vae_on_device(ctx, vae) as device:
                img = vae.vae.decode(z.to(device, _param_dtype(vae.vae))).sample.float().cpu()
        return ((img / 2.0 + 0.5).clamp(0.0, 1.0).movedim(1, -1).contiguous(),)


class VAEEncode(Node):
    """Encode images into latents with a VAE (cropped to whole latent cells)."""

    DISPLAY_NAME = "VAE Encode"
    CATEGORY = "latent"
    INPUTS = {"pixels": Link("IMAGE"), "vae": Link("VAE")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, pixels: Any, vae: Any):
        with ctx.models.use(vae) as (vae,):
            return ({"samples": encode(ctx, vae, pixels), "downscale": vae.downscale},)


def _mask4(mask: Any) -> Any:
    """MASK [B, H, W] or [H, W] → [B, 1, H, W] float."""
    return mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])


class VAEEncodeForInpaint(Node):
    """Encode images for inpainting: the masked area is greyed out and becomes the latent's noise mask."""

    DISPLAY_NAME = "VAE Encode (for Inpainting)"
    CATEGORY = "latent/inpaint"
    INPUTS = {"pixels": Link("IMAGE"), "vae": Link("VAE"), "mask": Link("MASK", tooltip="1 = repaint"),
              "grow_mask_by": Int(6, min=0, max=64, step=1, tooltip="grow the mask by this many pixels")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, pixels: Any, vae: Any, mask: Any, grow_mask_by: int):
        with ctx.models.use(vae) as (vae,):
            return self._encode(ctx, pixels, vae, mask, grow_mask_by)

    @staticmethod
    def _encode(ctx: Any, pixels: Any, vae: Any, mask: Any, grow_mask_by: int) -> tuple[dict]:
        import torch.nn.functional as F

        pixels = _crop_to(pixels, vae.downscale)
        h, w = pixels.shape[1], pixels.shape[2]
        m = F.interpolate(_mask4(mask), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
        if m.shape[0] not in (1, pixels.shape[0]):
            raise ValueError(f"mask batch {m.shape[0]} does not match the image batch {pixels.shape[0]}")
        grown = m
        if grow_mask_by > 0:
            k = grow_mask_by | 1
            grown = F.max_pool2d(m, kernel_size=k, stride=1, padding=k // 2)
        keep = 1.0 - m.round().movedim(1, -1)
        greyed = (pixels[..., :3] - 0.5) * keep + 0.5
        return ({"samples": encode(ctx, vae, greyed), "noise_mask": grown.round(), "downscale": vae.downscale},)


class SetLatentNoiseMask(Node):
    """Attach a mask to latents so that sampling only changes the masked area (1 = change)."""

    DISPLAY_NAME = "Set Latent Noise Mask"
    CATEGORY = "latent/inpaint"
    INPUTS = {"samples": Link("LATENT"), "mask": Link("MASK")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, mask: Any):
        out = {k: v for k, v in samples.items() if k != "pixel_size"}
        out["noise_mask"] = _mask4(mask)
        return (out,)


def _resized(samples: dict, height: int, width: int, method: str, crop: str) -> dict:
    out = dict(samples)
    out["samples"] = resample(samples["samples"], width, height, method, crop)
    if "pixel_size" in samples:
        ds = int(samples.get("downscale", DEFAULT_DOWNSCALE))
        out["pixel_size"] = (height * ds, width * ds)
    return out


class LatentUpscale(Node):
    """Resize latents to a pixel width and height (0 keeps the aspect ratio)."""

    DISPLAY_NAME = "Upscale Latent"
    CATEGORY = "latent"
    INPUTS = {"samples": Link("LATENT"), "upscale_method": Combo(LATENT_METHODS),
              "width": Int(512, min=0, max=MAX_SIZE, step=8), "height": Int(512, min=0, max=MAX_SIZE, step=8),
              "crop": Combo(CROP)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, upscale_method: str, width: int, height: int, crop: str):
        z = samples["samples"]
        ds = int(samples.get("downscale", DEFAULT_DOWNSCALE))
        h, w = target_size(z.shape[2] * ds, z.shape[3] * ds, width, height)
        return (_resized(samples, max(1, h // ds), max(1, w // ds), upscale_method, crop),)


class LatentUpscaleBy(Node):
    """Resize latents by a factor."""

    DISPLAY_NAME = "Upscale Latent By"
    CATEGORY = "latent"
    INPUTS = {"samples": Link("LATENT"), "upscale_method": Combo(LATENT_METHODS),
              "scale_by": Float(1.5, min=0.01, max=8.0, step=0.01)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, upscale_method: str, scale_by: float):
        z = samples["samples"]
        h, w = max(1, round(z.shape[2] * scale_by)), max(1, round(z.shape[3] * scale_by))
        return (_resized(samples, h, w, upscale_method, "disabled"),)


@hookimpl
def nodegraph_nodes():
    """The latent nodes."""
    return [EmptyLatentImage, VAEDecode, VAEEncode, VAEEncodeForInpaint, SetLatentNoiseMask, LatentUpscale,
            LatentUpscaleBy]
