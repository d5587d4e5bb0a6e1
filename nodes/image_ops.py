"""Image resizing and stitching nodes (ImageScale, ImageScaleBy, ImageStitch), on nodegraph.api's resampling."""

from __future__ import annotations

import math
from typing import Any

from nodegraph.api import (
    MATCH_TYPE,
    Boolean,
    Combo,
    DynamicCombo,
    Float,
    Int,
    Link,
    MatchType,
    Node,
    Output,
    hookimpl,
    resample,
    target_size,
)

MAX_SIZE = 16384
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP = ("disabled", "center")


def _scale_images(image: Any, width: int, height: int, method: str, crop: str) -> Any:
    out = resample(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)
    return out.clamp(0.0, 1.0) if method in ("bicubic", "lanczos") else out


class ImageScale(Node):
    """Resize images to a width and height (0 keeps the aspect ratio)."""

    DISPLAY_NAME = "Upscale Image"
    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"), "upscale_method": Combo(IMAGE_METHODS),
              "width": Int(512, min=0, max=MAX_SIZE, step=1), "height": Int(512, min=0, max=MAX_SIZE, step=1),
              "crop": Combo(CROP)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, width: int, height: int, crop: str):
        h, w = target_size(image.shape[1], image.shape[2], width, height)
        return (_scale_images(image, w, h, upscale_method, crop),)


class ImageScaleBy(Node):
    """Resize images by a factor."""

    DISPLAY_NAME = "Upscale Image By"
    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"), "upscale_method": Combo(IMAGE_METHODS),
              "scale_by": Float(1.0, min=0.01, max=8.0, step=0.01)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, scale_by: float):
        h, w = max(1, round(image.shape[1] * scale_by)), max(1, round(image.shape[2] * scale_by))
        return (_scale_images(image, w, h, upscale_method, "disabled"),)


#: ImageStitch's spacing colours (a grey level, or RGB).
SPACING_COLORS: dict[str, Any] = {"white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0),
                                  "blue": (0.0, 0.0, 1.0)}


def _pad_side(image: Any, dim: int, size: int, value: float) -> Any:
    """Pad IMAGE [B, H, W, C] along ``dim`` (1 = height, 2 = width) to ``size``, centred."""
    import torch.nn.functional as F

    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, 0, 0, before, after) if dim == 1 else (0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _spacing(shape: tuple[int, ...], color: Any) -> Any:
    import torch

    out = torch.zeros(shape)
    if isinstance(color, tuple):
        for i, c in enumerate(color[:shape[-1]]):
            out[..., i] = c
    else:
        out[..., :min(3, shape[-1])] = color
    if shape[-1] == 4:
        out[..., 3] = 1.0
    return out


class ImageStitch(Node):
    """Stitch image2 to image1 in a direction (image1 unchanged without image2), optionally with spacing between."""

    DISPLAY_NAME = "Image Stitch"
    CATEGORY = "image/transform"
    INPUTS = {"image1": Link("IMAGE"),
              "direction": Combo(["right", "down", "left", "up"], default="right"),
              "match_image_size": Boolean(True),
              "spacing_width": Int(0, min=0, max=1024, step=2),
              "spacing_color": Combo(list(SPACING_COLORS), default="white"),
              "image2": Link("IMAGE", optional=True)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image1: Any, direction: str, match_image_size: bool, spacing_width: int,
                spacing_color: str, image2: Any = None):
        import torch

        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])  # the shorter batch repeats its last image
        image1, image2 = (torch.cat([im, im[-1:].repeat(batch - im.shape[0], 1, 1, 1)]) for im in (image1, image2))
        sideways = direction in ("left", "right")
        color = SPACING_COLORS[spacing_color]
        if match_image_size:
            h1, w1, h2, w2 = image1.shape[1], image1.shape[2], image2.shape[1], image2.shape[2]
            th, tw = (h1, int(h1 * w2 / h2)) if sideways else (int(w1 / (w2 / h2)), w1)
            image2 = _scale_images(image2, tw, th, "lanczos", "disabled")
        else:
            fill = 0.0 if isinstance(color, tuple) else color
            dim = 1 if sideways else 2
            size = max(image1.shape[dim], image2.shape[dim])
            image1, image2 = _pad_side(image1, dim, size, fill), _pad_side(image2, dim, size, fill)
        channels = max(image1.shape[-1], image2.shape[-1])  # a missing alpha channel is opaque
        image1, image2 = (torch.cat([im, torch.ones(*im.shape[:-1], channels - im.shape[-1])], -1)
                          for im in (image1, image2))
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            shape = ((batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels) if sideways
                     else (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels))
            parts.insert(1, _spacing(shape, color))
        return (torch.cat(parts, dim=2 if sideways else 1),)


class ImageFlip(Node):
    """Mirror images: top to bottom (x-axis) or left to right (y-axis)."""

    CATEGORY = "image/transform"
    INPUTS = {"image": Link("IMAGE"), "flip_method": Combo(["x-axis: vertically", "y-axis: horizontally"])}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, flip_method: str):
        return (image.flip(1 if flip_method.startswith("x") else 2),)


class ImageRotate(Node):
    """Rotate images clockwise by a multiple of 90 degrees."""

    CATEGORY = "image/transform"
    INPUTS = {"image": Link("IMAGE"), "rotation": Combo(["none", "90 degrees", "180 degrees", "270 degrees"])}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, rotation: str):
        turns = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
        return (image.rot90(turns, dims=(2, 1)),)  # from width toward height: clockwise on screen


class ImageScaleToMaxDimension(Node):
    """Resize images so that their longer side is largest_size, keeping the aspect ratio."""

    CATEGORY = "image/upscaling"
    INPUTS = {"image": Link("IMAGE"),
              "upscale_method": Combo(["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]),
              "largest_size": Int(512, min=0, max=MAX_SIZE, step=1)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, upscale_method: str, largest_size: int):
        h, w = image.shape[1], image.shape[2]
        if h > w:
            h, w = largest_size, round(w / h * largest_size)
        elif w > h:
            h, w = round(h / w * largest_size), largest_size
        else:
            h = w = largest_size
        if h < 1 or w < 1:
            raise ValueError(f"largest_size {largest_size} leaves an image of {w}x{h}; use 1 or more")
        return (resample(image.movedim(-1, 1), w, h, upscale_method).movedim(1, -1),)


class ResizeAndPadImage(Node):
    """Fit images inside target_width × target_height (aspect kept) and pad the rest, centred, white or black."""

    CATEGORY = "image/transform"
    INPUTS = {"image": Link("IMAGE"), "target_width": Int(512, min=1, max=MAX_SIZE, step=1),
              "target_height": Int(512, min=1, max=MAX_SIZE, step=1), "padding_color": Combo(["white", "black"]),
              "interpolation": Combo(["area", "bicubic", "nearest-exact", "bilinear", "lanczos"])}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, target_width: int, target_height: int, padding_color: str,
                interpolation: str):
        import torch

        b, h, w, c = image.shape
        scale = min(target_width / w, target_height / h)
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        resized = resample(image.movedim(-1, 1), nw, nh, interpolation)
        out = torch.full((b, c, target_height, target_width), 0.0 if padding_color == "black" else 1.0,
                         dtype=image.dtype)
        top, left = (target_height - nh) // 2, (target_width - nw) // 2
        out[:, :, top:top + nh, left:left + nw] = resized
        return (out.movedim(1, -1),)


class ImageAddNoise(Node):
    """Add the seed's Gaussian noise times strength to images, clipped to [0, 1]."""

    CATEGORY = "image"
    INPUTS = {"image": Link("IMAGE"),
              "seed": Int(0, min=0, max=0xFFFFFFFFFFFFFFFF, step=None, control_after_generate=True,
                          tooltip="The random seed used for creating the noise."),
              "strength": Float(0.5, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, seed: int, strength: float):
        import torch

        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(tuple(image.shape), generator=generator).to(image)
        return ((image + strength * noise).clamp(0.0, 1.0),)


def _side(default: int = 512) -> Any:
    return Int(default, min=0, max=MAX_SIZE, step=1)


_RESIZE_CROP = Combo(CROP, default="center")
RESIZE_TYPES = {
    "scale by multiplier": {"multiplier": Float(1.0, min=0.01, max=8.0, step=0.01)},
    "scale dimensions": {"width": _side(), "height": _side(), "crop": _RESIZE_CROP},
    "scale longer dimension": {"longer_size": _side()},
    "scale shorter dimension": {"shorter_size": _side()},
    "scale width": {"width": _side()},
    "scale height": {"height": _side()},
    "scale total pixels": {"megapixels": Float(1.0, min=0.01, max=16.0, step=0.01)},
    "match size": {"match": Link("IMAGE,MASK"), "crop": _RESIZE_CROP},
}


def _resize_size(h: int, w: int, how: dict[str, Any]) -> tuple[int, int, str]:
    """(height, width, crop) that a ResizeImageMaskNode choice gives an input of h × w."""
    kind = how["resize_type"]
    if kind == "scale by multiplier":
        return round(h * how["multiplier"]), round(w * how["multiplier"]), "disabled"
    if kind in ("scale dimensions", "scale width", "scale height"):
        width = how["width"] if kind != "scale height" else 0
        height = how["height"] if kind != "scale width" else 0
        return (*target_size(h, w, width, height), how.get("crop", "disabled"))
    if kind in ("scale longer dimension", "scale shorter dimension"):
        size = how["longer_size"] if kind == "scale longer dimension" else how["shorter_size"]
        if h == w:
            return size, size, "disabled"
        scale_height = (h > w) == (kind == "scale longer dimension")
        return (size, round(w / h * size), "disabled") if scale_height else (round(h / w * size), size, "disabled")
    if kind == "scale total pixels":
        factor = math.sqrt(int(how["megapixels"] * 1024 * 1024) / (w * h))
        return round(h * factor), round(w * factor), "disabled"
    match = how["match"]
    return match.shape[1], match.shape[2], how["crop"]


class ResizeImageMaskNode(Node):
    """Resize an image or a mask: by a multiplier, to dimensions, by one side, to a pixel count or to match
    another image/mask (the chosen resize type brings its own inputs)."""

    DISPLAY_NAME = "Resize Image/Mask"
    CATEGORY = "transform"
    INPUTS = {"input": MatchType("IMAGE,MASK", template_id="input_type"),
              "resize_type": DynamicCombo(RESIZE_TYPES),
              "scale_method": Combo(IMAGE_METHODS, default="area")}
    OUTPUTS = (Output(MATCH_TYPE, name="resized"),)
    #: The size checked against the engine's pixel limits (when both are set: "scale dimensions").
    PIXEL_INPUTS = ("resize_type.width", "resize_type.height")

    def execute(self, ctx, input: Any, resize_type: dict[str, Any], scale_method: str):
        h, w = input.shape[1], input.shape[2]
        height, width, crop = _resize_size(h, w, resize_type)
        image = input.dim() == 4
        nchw = input.movedim(-1, 1) if image else input.unsqueeze(1)
        out = resample(nchw, width, height, scale_method, crop)
        return (out.movedim(1, -1) if image else out.squeeze(1),)


@hookimpl
def nodegraph_nodes():
    """The image resizing, stitching, flipping, rotating and noise nodes."""
    return [ImageScale, ImageScaleBy, ImageStitch, ImageFlip, ImageRotate, ImageScaleToMaxDimension,
            ResizeAndPadImage, ImageAddNoise, ResizeImageMaskNode]
