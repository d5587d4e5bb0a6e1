"""Image tensor nodes with ComfyUI's names and numbers: crop, pad, composite (images and latents), alpha, filters."""

from __future__ import annotations

import math
from typing import Any

from nodegraph.api import Boolean, Combo, Float, Int, Link, Node, Output, hookimpl, resample

MAX_RESOLUTION = 16384
SCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


def _resize_mask(mask: Any, height: int, width: int) -> Any:
    """A mask as [B, 1, height, width], bilinearly resized (ComfyUI's mask resize)."""
    import torch

    flat = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    return torch.nn.functional.interpolate(flat, size=(height, width), mode="bilinear")


def _repeat_to(tensor: Any, batch: int) -> Any:
    """Repeat (or cut) a batch to ``batch`` items."""
    if tensor.shape[0] == batch:
        return tensor
    times = math.ceil(batch / tensor.shape[0])
    return tensor.repeat((times,) + (1,) * (tensor.dim() - 1))[:batch]


def composite(destination: Any, source: Any, x: int, y: int, mask: Any, multiplier: int, resize_source: bool) -> Any:
    """Paste ``source`` over ``destination`` (both NCHW; destination changed in place) at (x, y) // multiplier."""
    import torch

    if resize_source:
        source = torch.nn.functional.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = _repeat_to(source, destination.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, destination.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, destination.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = _repeat_to(_resize_mask(mask, source.shape[2], source.shape[3]), source.shape[0])
    visible_w = destination.shape[3] - left + min(0, x)
    visible_h = destination.shape[2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    pasted = mask * source[:, :, :visible_h, :visible_w]
    kept = (1.0 - mask) * destination[:, :, top:bottom, left:right]
    destination[:, :, top:bottom, left:right] = pasted + kept
    return destination


class ImageCompositeMasked(Node):
    """Paste ``source`` onto ``destination`` at (x, y), through an optional mask."""

    CATEGORY = "image"
    INPUTS = {"destination": Link("IMAGE"), "source": Link("IMAGE"), "x": Int(0, min=0, max=MAX_RESOLUTION),
              "y": Int(0, min=0, max=MAX_RESOLUTION), "resize_source": Boolean(False),
              "mask": Link("MASK", optional=True)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, destination: Any, source: Any, x: int, y: int, resize_source: bool, mask: Any = None):
        import torch

        if destination.shape[-1] < source.shape[-1]:
            source = source[..., :destination.shape[-1]]
        elif destination.shape[-1] > source.shape[-1]:
            destination = torch.nn.functional.pad(destination, (0, 1), value=1.0)
        dest = destination.clone().movedim(-1, 1)
        return (composite(dest, source.movedim(-1, 1), x, y, mask, 1, resize_source).movedim(1, -1),)


class LatentCompositeMasked(Node):
    """Paste ``source`` into ``destination`` at (x, y) pixels through an optional mask."""

    CATEGORY = "latent"
    INPUTS = {"destination": Link("LATENT"), "source": Link("LATENT"),
              "x": Int(0, min=0, max=MAX_RESOLUTION, step=8), "y": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "resize_source": Boolean(False), "mask": Link("MASK", optional=True)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, destination: dict, source: dict, x: int, y: int, resize_source: bool, mask: Any = None):
        dest = destination["samples"].clone()
        out = dict(destination)
        out["samples"] = composite(dest, source["samples"], x, y, mask, 8, resize_source)
        return (out,)


class ImageCrop(Node):
    """Cut a width x height rectangle at (x, y) out of every image."""

    DISPLAY_NAME = "Image Crop"
    CATEGORY = "image/transform"
    INPUTS = {"image": Link("IMAGE"), "width": Int(512, min=1, max=MAX_RESOLUTION),
              "height": Int(512, min=1, max=MAX_RESOLUTION), "x": Int(0, min=0, max=MAX_RESOLUTION),
              "y": Int(0, min=0, max=MAX_RESOLUTION)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, width: int, height: int, x: int, y: int):
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImagePadForOutpaint(Node):
    """Pad images with grey and return the mask of the new area (feathered into the old one)."""

    DISPLAY_NAME = "Pad Image for Outpainting"
    CATEGORY = "image"
    INPUTS = {"image": Link("IMAGE"), "left": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "top": Int(0, min=0, max=MAX_RESOLUTION, step=8), "right": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "bottom": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "feathering": Int(40, min=0, max=MAX_RESOLUTION, step=1)}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, ctx, image: Any, left: int, top: int, right: int, bottom: int, feathering: int):
        import torch

        b, h, w, c = image.shape
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        out[:, top:top + h, left:left + w, :] = image
        mask = torch.ones((h + top + bottom, w + left + right))
        inner = torch.zeros((h, w))
        if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
            rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
            cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
            dist = torch.stack([rows if top else torch.full_like(rows, h), h - rows if bottom else torch.full_like(rows, h),
                                cols if left else torch.full_like(cols, w), w - cols if right else torch.full_like(cols, w)])
            d = dist.amin(dim=0)
            ramp = ((feathering - d) / feathering) ** 2
            inner = torch.where(d < feathering, ramp, inner)
        mask[top:top + h, left:left + w] = inner
        return (out, mask[None])


class RepeatImageBatch(Node):
    """Repeat an image batch ``amount`` times."""

    CATEGORY = "image/batch"
    INPUTS = {"image": Link("IMAGE"), "amount": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, amount: int):
        return (image.repeat((amount, 1, 1, 1)),)


class ImageScaleToTotalPixels(Node):
    """Resize images to about ``megapixels`` million pixels (x 1024 x 1024), keeping the aspect ratio."""

    DISPLAY_NAME = "Scale Image to Total Pixels"
    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"), "upscale_method": Combo(SCALE_METHODS),
              "megapixels": Float(1.0, min=0.01, max=16.0, step=0.01)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, megapixels: float):
        samples = image.movedim(-1, 1)
        scale = math.sqrt(int(megapixels * 1024 * 1024) / (samples.shape[3] * samples.shape[2]))
        width, height = round(samples.shape[3] * scale), round(samples.shape[2] * scale)
        return (resample(samples, width, height, upscale_method, "disabled").movedim(1, -1),)


def gaussian_kernel(size: int, sigma: float) -> Any:
    """ComfyUI's blur kernel: a Gaussian of ``sigma`` over coordinates spanning -1..1, normalised to sum 1."""
    import torch

    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
    return g / g.sum()


def _convolve(image: Any, kernel: Any, radius: int) -> Any:
    """Convolve each channel of [B, H, W, C] images with ``kernel``, reflecting at the borders."""
    import torch.nn.functional as F

    channels = image.shape[-1]
    weight = kernel.to(image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    x = F.pad(image.movedim(-1, 1), (radius,) * 4, mode="reflect")
    out = F.conv2d(x, weight, padding=kernel.shape[-1] // 2, groups=channels)
    return out[:, :, radius:-radius, radius:-radius].movedim(1, -1)


class ImageBlur(Node):
    """Gaussian blur."""

    DISPLAY_NAME = "Image Blur"
    CATEGORY = "image/postprocessing"
    INPUTS = {"image": Link("IMAGE"), "blur_radius": Int(1, min=1, max=31, step=1),
              "sigma": Float(1.0, min=0.1, max=10.0, step=0.1)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, blur_radius: int, sigma: float):
        if blur_radius == 0:
            return (image,)
        return (_convolve(image, gaussian_kernel(blur_radius * 2 + 1, sigma), blur_radius),)


class ImageSharpen(Node):
    """Unsharp-style sharpening: subtract a scaled Gaussian around each pixel, clamped to 0..1."""

    DISPLAY_NAME = "Image Sharpen"
    CATEGORY = "image/postprocessing"
    INPUTS = {"image": Link("IMAGE"), "sharpen_radius": Int(1, min=1, max=31, step=1),
              "sigma": Float(1.0, min=0.1, max=10.0, step=0.01), "alpha": Float(1.0, min=0.0, max=5.0, step=0.01)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, sharpen_radius: int, sigma: float, alpha: float):
        if sharpen_radius == 0:
            return (image,)
        size = sharpen_radius * 2 + 1
        kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
        centre = size // 2
        kernel[centre, centre] = kernel[centre, centre] - kernel.sum() + 1.0
        return (_convolve(image, kernel, sharpen_radius).clamp(0.0, 1.0),)


def _bayer(n: int) -> Any:
    """The normalised Bayer threshold matrix of size 2**n (ComfyUI's recursive construction)."""
    import numpy as np

    if n == 0:
        return np.zeros((1, 1), dtype=np.float32)
    q = 4 ** n
    m = q * _bayer(n - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


class ImageQuantize(Node):
    """Reduce each image to a palette of ``colors`` colours (Pillow's quantiser), optionally dithered."""

    DISPLAY_NAME = "Image Quantize"
    CATEGORY = "image/postprocessing"
    INPUTS = {"image": Link("IMAGE"), "colors": Int(256, min=1, max=256, step=1), "dither": Combo(DITHERS)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, colors: int, dither: str):
        import numpy as np
        import torch
        from PIL import Image

        out = torch.zeros_like(image)
        for i in range(image.shape[0]):
            pixels = (image[i, :, :, :3] * 255).to(torch.uint8).numpy()
            pil = Image.fromarray(pixels, mode="RGB")
            palette = pil.quantize(colors=colors)
            if dither.startswith("bayer-"):
                order = int(dither.split("-")[1])
                count = len(palette.getpalette()) // 3
                matrix = torch.from_numpy(2 * 256 / count * _bayer(int(math.log2(order))) + 0.5).float()
                arr = torch.from_numpy(np.array(pil).astype(np.float32))
                reps = (math.ceil(arr.shape[0] / order), math.ceil(arr.shape[1] / order))
                arr += matrix.tile(reps)[:arr.shape[0], :arr.shape[1], None]
                pil = Image.fromarray(arr.clamp(0, 255).to(torch.uint8).numpy())
                mode = Image.Dither.NONE
            else:
                mode = Image.Dither.FLOYDSTEINBERG if dither == "floyd-steinberg" else Image.Dither.NONE
            done = pil.quantize(colors=colors, palette=palette, dither=mode)
            out[i, :, :, :3] = torch.from_numpy(np.array(done.convert("RGB"))).float() / 255
        return (out,)


class GetImageSize(Node):
    """The width, height and batch size of images."""

    DISPLAY_NAME = "Get Image Size"
    CATEGORY = "image"
    INPUTS = {"image": Link("IMAGE")}
    OUTPUTS = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def execute(self, ctx, image: Any):
        return (int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


class JoinImageWithAlpha(Node):
    """RGB images plus a mask as RGBA images (alpha = 1 - mask, ComfyUI's convention)."""

    DISPLAY_NAME = "Join Image with Alpha"
    CATEGORY = "mask/compositing"
    INPUTS = {"image": Link("IMAGE"), "alpha": Link("MASK")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, alpha: Any):
        import torch

        a = 1.0 - _resize_mask(alpha, image.shape[1], image.shape[2])[:, 0]
        if a.shape[0] == 1:  # one mask serves the whole batch
            a = _repeat_to(a, image.shape[0])
        batch = min(image.shape[0], a.shape[0])
        return (torch.cat((image[:batch, ..., :3], a[:batch, ..., None].to(image.dtype)), dim=-1),)


class SplitImageWithAlpha(Node):
    """RGBA images as RGB images and a mask (mask = 1 - alpha; all zeros without an alpha channel)."""

    DISPLAY_NAME = "Split Image with Alpha"
    CATEGORY = "mask/compositing"
    INPUTS = {"image": Link("IMAGE")}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, ctx, image: Any):
        import torch

        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


def _union(sa: Any, da: Any) -> Any:
    return sa + da - sa * da


#: Porter-Duff operators on premultiplied colour: mode → (alpha(sa, da), colour(s, sa, d, da)), as ComfyUI
#: computes them (its darken/lighten/overlay are its own simplified forms).
PORTER_DUFF: dict[str, tuple[Any, Any]] = {
    "ADD": (lambda sa, da: (sa + da).clamp(0, 1), lambda s, sa, d, da: (s + d).clamp(0, 1)),
    "CLEAR": (lambda sa, da: da * 0, lambda s, sa, d, da: d * 0),
    "DARKEN": (_union, lambda s, sa, d, da: (1 - da) * s + (1 - sa) * d + s.minimum(d)),
    "DST": (lambda sa, da: da, lambda s, sa, d, da: d),
    "DST_ATOP": (lambda sa, da: sa, lambda s, sa, d, da: sa * d + (1 - da) * s),
    "DST_IN": (lambda sa, da: sa * da, lambda s, sa, d, da: d * sa),
    "DST_OUT": (lambda sa, da: (1 - sa) * da, lambda s, sa, d, da: (1 - sa) * d),
    "DST_OVER": (lambda sa, da: da + (1 - da) * sa, lambda s, sa, d, da: d + (1 - da) * s),
    "LIGHTEN": (_union, lambda s, sa, d, da: (1 - da) * s + (1 - sa) * d + s.maximum(d)),
    "MULTIPLY": (lambda sa, da: sa * da, lambda s, sa, d, da: s * d),
    "OVERLAY": (_union, lambda s, sa, d, da: (2 * d < da).where(2 * s * d, sa * da - 2 * (da - s) * (sa - d))),
    "SCREEN": (_union, lambda s, sa, d, da: s + d - s * d),
    "SRC": (lambda sa, da: sa, lambda s, sa, d, da: s),
    "SRC_ATOP": (lambda sa, da: da, lambda s, sa, d, da: da * s + (1 - sa) * d),
    "SRC_IN": (lambda sa, da: sa * da, lambda s, sa, d, da: s * da),
    "SRC_OUT": (lambda sa, da: (1 - da) * sa, lambda s, sa, d, da: (1 - da) * s),
    "SRC_OVER": (lambda sa, da: sa + (1 - sa) * da, lambda s, sa, d, da: s + (1 - sa) * d),
    "XOR": (lambda sa, da: (1 - da) * sa + (1 - sa) * da, lambda s, sa, d, da: (1 - da) * s + (1 - sa) * d),
}


def porter_duff(src: Any, src_mask: Any, dst: Any, dst_mask: Any, mode: str) -> tuple[Any, Any]:
    """One Porter-Duff composite of [H, W, C] images whose masks [H, W, 1] are 1 - alpha: (image, mask)."""
    import torch

    alpha_of, colour_of = PORTER_DUFF[mode]
    sa, da = 1 - src_mask, 1 - dst_mask
    s, d = src * sa, dst * da
    alpha, colour = alpha_of(sa, da), colour_of(s, sa, d, da)
    image = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour)).clamp(0, 1)
    return image, 1 - alpha


def _fit(image: Any, height: int, width: int) -> Any:
    """[H, W, C] resized (bicubic, centre crop) to height × width."""
    return resample(image.permute(2, 0, 1)[None], width, height, "bicubic", "center")[0].permute(1, 2, 0)


class PorterDuffImageComposite(Node):
    """Composite source over destination with a Porter-Duff operator; masks are 1 - alpha, as ComfyUI's."""

    DISPLAY_NAME = "Porter-Duff Image Composite"
    CATEGORY = "mask/compositing"
    INPUTS = {"source": Link("IMAGE"), "source_alpha": Link("MASK"), "destination": Link("IMAGE"),
              "destination_alpha": Link("MASK"), "mode": Combo(list(PORTER_DUFF), default="DST")}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, ctx, source: Any, source_alpha: Any, destination: Any, destination_alpha: Any, mode: str):
        import torch

        if mode not in PORTER_DUFF:
            raise ValueError(f"mode {mode!r}: choose one of {', '.join(PORTER_DUFF)}")
        source_alpha, destination_alpha = source_alpha.reshape(-1, *source_alpha.shape[-2:]), \
            destination_alpha.reshape(-1, *destination_alpha.shape[-2:])
        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        images, masks = [], []
        for i in range(count):
            src, dst = source[i], destination[i]
            if src.shape[-1] != dst.shape[-1]:
                raise ValueError(f"source has {src.shape[-1]} channels and destination {dst.shape[-1]}; give both "
                                 "RGB (or both RGBA) images")
            sa, da = source_alpha[i][..., None], destination_alpha[i][..., None]
            if da.shape[:2] != dst.shape[:2]:
                da = _fit(da, dst.shape[0], dst.shape[1])
            if src.shape != dst.shape:
                src = _fit(src, dst.shape[0], dst.shape[1])
            if sa.shape != da.shape:
                sa = _fit(sa, da.shape[0], da.shape[1])
            image, mask = porter_duff(src, sa, dst, da, mode)
            images.append(image)
            masks.append(mask[..., 0])
        return (torch.stack(images), torch.stack(masks))


@hookimpl
def nodegraph_nodes():
    """The image compositing, transform and filter nodes."""
    return [ImageCompositeMasked, LatentCompositeMasked, ImageCrop, ImagePadForOutpaint, RepeatImageBatch, ImageScaleToTotalPixels,
            ImageBlur, ImageSharpen, ImageQuantize, GetImageSize, JoinImageWithAlpha, SplitImageWithAlpha,
            PorterDuffImageComposite]
