"""Image resizing nodes (ImageScale, ImageScaleBy), on the resampling helpers of nodegraph.api."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Combo, Float, Int, Link, Node, Output, hookimpl, resample, target_size

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


@hookimpl
def nodegraph_nodes():
    """The image resizing nodes."""
    return [ImageScale, ImageScaleBy]
