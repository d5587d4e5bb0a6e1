"""Mask nodes with ComfyUI's names, inputs and numbers: solid, invert, composite, grow, feather, crop, threshold."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, hookimpl

MAX_RESOLUTION = 16384
CHANNELS = ("red", "green", "blue", "alpha")
OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def as_batch(mask: Any) -> Any:
    """A mask as [B, H, W] (a bare [H, W] becomes a batch of one)."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class SolidMask(Node):
    """A mask of one value."""

    CATEGORY = "mask"
    INPUTS = {"value": Float(1.0, min=0.0, max=1.0, step=0.01),
              "width": Int(512, min=1, max=MAX_RESOLUTION, step=1),
              "height": Int(512, min=1, max=MAX_RESOLUTION, step=1)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, value: float, width: int, height: int):
        import torch

        return (torch.full((1, height, width), float(value), dtype=torch.float32),)


class InvertMask(Node):
    """One minus the mask."""

    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK")}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, mask: Any):
        return (1.0 - mask,)


class CropMask(Node):
    """Cut a rectangle out of a mask."""

    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK"), "x": Int(0, min=0, max=MAX_RESOLUTION), "y": Int(0, min=0, max=MAX_RESOLUTION),
              "width": Int(512, min=1, max=MAX_RESOLUTION), "height": Int(512, min=1, max=MAX_RESOLUTION)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, mask: Any, x: int, y: int, width: int, height: int):
        return (as_batch(mask)[:, y:y + height, x:x + width],)


class MaskComposite(Node):
    """Combine ``source`` into ``destination`` at (x, y) with an arithmetic or logical operation, clamped to 0..1."""

    CATEGORY = "mask"
    INPUTS = {"destination": Link("MASK"), "source": Link("MASK"), "x": Int(0, min=0, max=MAX_RESOLUTION),
              "y": Int(0, min=0, max=MAX_RESOLUTION), "operation": Combo(OPERATIONS)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, destination: Any, source: Any, x: int, y: int, operation: str):
        import torch

        dest = as_batch(destination)
        out = dest.clone()
        src = as_batch(source)
        right, bottom = min(x + src.shape[-1], dest.shape[-1]), min(y + src.shape[-2], dest.shape[-2])
        a = dest[:, y:bottom, x:right]
        b = src[:, :max(0, bottom - y), :max(0, right - x)]
        if operation in ("and", "or", "xor"):
            fn = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
            region = fn(a.round().bool(), b.round().bool()).float()
        else:
            region = {"multiply": lambda: a * b, "add": lambda: a + b, "subtract": lambda: a - b}[operation]()
        out[:, y:bottom, x:right] = region
        return (out.clamp(0.0, 1.0),)


class FeatherMask(Node):
    """Fade the mask linearly towards each edge over the given number of pixels."""

    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK"), "left": Int(0, min=0, max=MAX_RESOLUTION), "top": Int(0, min=0, max=MAX_RESOLUTION),
              "right": Int(0, min=0, max=MAX_RESOLUTION), "bottom": Int(0, min=0, max=MAX_RESOLUTION)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, mask: Any, left: int, top: int, right: int, bottom: int):
        out = as_batch(mask).clone()
        h, w = out.shape[-2], out.shape[-1]
        left, right, top, bottom = min(left, w), min(right, w), min(top, h), min(bottom, h)
        # ComfyUI's ramps: column/row i from the edge gets (i + 1) / n; on the right and bottom edges it indexes
        # -i, so step 0 lands on column/row 0 (kept as-is for identical numbers).
        for i in range(left):
            out[:, :, i] *= (i + 1.0) / left
        for i in range(right):
            out[:, :, -i] *= (i + 1.0) / right
        for i in range(top):
            out[:, i, :] *= (i + 1.0) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1.0) / bottom
        return (out,)


def _morph(mask: Any, steps: int, tapered: bool) -> Any:
    """Grey dilation (steps > 0) or erosion (steps < 0) with a 3x3 cross (tapered) or square footprint."""
    import torch

    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if not (tapered and dy and dx)]
    out = mask
    h, w = mask.shape[-2], mask.shape[-1]
    reduce = torch.amax if steps > 0 else torch.amin
    for _ in range(abs(steps)):
        padded = torch.nn.functional.pad(out[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
        shifted = torch.stack([padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets])
        grown = reduce(shifted, dim=0)
        if torch.equal(grown, out):  # stable: more steps change nothing (a huge ``expand`` stays cheap)
            break
        out = grown
    return out


class GrowMask(Node):
    """Grow (expand > 0) or shrink (expand < 0) a mask by whole pixels."""

    DISPLAY_NAME = "Grow Mask"
    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK"), "expand": Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              "tapered_corners": Boolean(True)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, mask: Any, expand: int, tapered_corners: bool):
        return (_morph(as_batch(mask).float(), expand, tapered_corners),)


class ThresholdMask(Node):
    """1 where the mask is above ``value``, else 0."""

    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK"), "value": Float(0.5, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, mask: Any, value: float):
        return ((mask > value).float(),)


class ImageToMask(Node):
    """One channel of the images as a mask."""

    DISPLAY_NAME = "Convert Image to Mask"
    CATEGORY = "mask"
    INPUTS = {"image": Link("IMAGE"), "channel": Combo(CHANNELS)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, image: Any, channel: str):
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"ImageToMask: the image has {image.shape[-1]} channels, so it has no {channel!r} "
                             "channel; pick red, green or blue, or join an alpha with JoinImageWithAlpha")
        return (image[:, :, :, index],)


class MaskToImage(Node):
    """A mask as a grey RGB image."""

    DISPLAY_NAME = "Convert Mask to Image"
    CATEGORY = "mask"
    INPUTS = {"mask": Link("MASK")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, mask: Any):
        return (as_batch(mask)[..., None].expand(-1, -1, -1, 3),)


class ImageColorToMask(Node):
    """A mask of the pixels whose 8-bit colour equals ``color`` (0xRRGGBB); ComfyUI's value there is 255."""

    CATEGORY = "mask"
    INPUTS = {"image": Link("IMAGE"), "color": Int(0, min=0, max=0xFFFFFF, step=1)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, image: Any, color: int):
        import torch

        rgb = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.int64)
        packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
        return ((packed == color).float() * 255.0,)


class MaskPreview(Node):
    """Show masks in the editor (saved as grey images to the temp folder)."""

    DISPLAY_NAME = "Preview Mask"
    CATEGORY = "mask"
    OUTPUT_NODE = True
    INPUTS = {"mask": Link("MASK")}
    OUTPUTS = ()

    def execute(self, ctx, mask: Any):
        import uuid

        from .image_io import png_text

        images = as_batch(mask)[..., None].expand(-1, -1, -1, 3)
        entries = ctx.files.save_images(images, f"preview_mask_{uuid.uuid4().hex[:8]}", "temp", png_text(ctx))
        return NodeOutput((), {"images": entries})


@hookimpl
def nodegraph_nodes():
    """The mask nodes."""
    return [SolidMask, InvertMask, MaskComposite, GrowMask, FeatherMask, CropMask, ThresholdMask, ImageToMask,
            MaskToImage, ImageColorToMask, MaskPreview]
