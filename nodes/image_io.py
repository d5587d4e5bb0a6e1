"""Image input and output nodes: load from the input folder, save to the output folder, preview to temp."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from nodegraph.api import (STILL_FORMATS, Combo, DisplayWidget, DynamicCombo, Float, Int, Link, Node, NodeOutput,
                           Output, OutputFile, String, advanced, encode_with_metadata, hookimpl, pil_to_image,
                           pil_to_mask, run_metadata, safe_join)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def input_images(config: Any) -> list[str]:
    """Image files in the input folder (relative paths), for LoadImage's combo."""
    if config is None or not config.input_dir.is_dir():
        return []
    root = config.input_dir
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _file_digest(config: Any, name: str) -> str:
    path = safe_join(config.input_dir, name)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


class LoadImage(Node):
    """Load an image (and its alpha as a mask) from the input folder."""

    DISPLAY_NAME = "Load Image"
    CATEGORY = "image"
    INPUTS = {"image": Combo(input_images, image_upload=True, tooltip="a file in the input folder")}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def fingerprint(cls, config, **constants):
        return _file_digest(config, constants["image"])

    def execute(self, ctx, image: str):
        img = ctx.files.open_image(image)
        return (pil_to_image(img), pil_to_mask(img, "A"))


def output_images(config: Any) -> list[str]:
    """Image files directly in the output folder, newest first (LoadImageOutput's combo, as the editor lists them)."""
    if config is None or not config.outputs_dir.is_dir():
        return []
    files = [p for p in config.outputs_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return [f"{p.name} [output]" for p in sorted(files, key=lambda p: -p.stat().st_mtime)]


def _output_name(image: str) -> str:
    """The file name without the `` [output]`` annotation the editor (and ComfyUI's saved prompts) give it."""
    return image[:-len(" [output]")] if image.endswith(" [output]") else image


class LoadImageOutput(Node):
    """Load an image from the output folder; the editor's refresh button lists the newest outputs first."""

    DISPLAY_NAME = "Load Image (from Outputs)"
    CATEGORY = "image"
    INPUTS = {"image": Combo(output_images, image_upload=True, widget_options={
        "image_folder": "output",
        "remote": {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"}})}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def fingerprint(cls, config, **constants):
        path = safe_join(config.outputs_dir, _output_name(constants["image"]))
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"

    def execute(self, ctx, image: str):
        from PIL import Image, ImageOps

        path = ctx.files.path("output", _output_name(image))
        if not path.is_file():
            raise FileNotFoundError(f"LoadImageOutput: {image!r} is not in the output folder; run a graph that saves "
                                    "it or pick one from the list")
        img = Image.open(path)
        img = ImageOps.exif_transpose(img) or img
        return (pil_to_image(img), pil_to_mask(img, "A"))


class LoadImageMask(Node):
    """Load one channel of an image from the input folder as a mask."""

    DISPLAY_NAME = "Load Image (as Mask)"
    CATEGORY = "mask"
    INPUTS = {"image": Combo(input_images, image_upload=True),
              "channel": Combo(["alpha", "red", "green", "blue"])}
    OUTPUTS = (Output("MASK"),)

    @classmethod
    def fingerprint(cls, config, **constants):
        return _file_digest(config, constants["image"])

    def execute(self, ctx, image: str, channel: str):
        return (pil_to_mask(ctx.files.open_image(image), channel[0].upper()),)


def png_text(ctx: Any) -> dict[str, Any]:
    """The PNG text chunks ComfyUI writes: ``prompt`` plus one per extra_pnginfo key (``workflow``, …)."""
    text: dict[str, Any] = {"prompt": ctx.prompt}
    text.update(ctx.extra_pnginfo)
    manifest = getattr(ctx, "manifest", None)
    if manifest:
        text["nodegraph"] = manifest
    return text


class SaveImage(Node):
    """Save images as PNG (with the workflow in text chunks) to the output folder."""

    DISPLAY_NAME = "Save Image"
    CATEGORY = "image"
    OUTPUT_NODE = True
    INPUTS = {"images": Link("IMAGE", tooltip="the images to save"),
              "filename_prefix": String("ComfyUI", tooltip="file name prefix; may include a subfolder")}
    OUTPUTS = ()
    FOLDER = "output"

    def execute(self, ctx, images: Any, filename_prefix: str = "ComfyUI"):
        entries = ctx.files.save_images(images, filename_prefix, self.FOLDER, png_text(ctx))
        return NodeOutput((), {"images": entries})


class PreviewImage(SaveImage):
    """Save images to the temp folder for previewing."""

    DISPLAY_NAME = "Preview Image"
    INPUTS = {"images": Link("IMAGE")}
    FOLDER = "temp"

    def execute(self, ctx, images: Any):
        return super().execute(ctx, images, f"preview_{uuid.uuid4().hex[:8]}")


class EmptyImage(Node):
    """A batch of images filled with one colour."""

    DISPLAY_NAME = "Empty Image"
    CATEGORY = "image"
    INPUTS = {"width": Int(512, min=1, max=16384, step=1), "height": Int(512, min=1, max=16384, step=1),
              "batch_size": Int(1, min=1, max=4096, step=None), "color": Int(0, min=0, max=0xFFFFFF, tooltip="0xRRGGBB")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, width: int, height: int, batch_size: int, color: int):
        import torch

        rgb = torch.tensor([(color >> 16) & 255, (color >> 8) & 255, color & 255], dtype=torch.float32) / 255.0
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageInvert(Node):
    """Invert the colours of images."""

    DISPLAY_NAME = "Invert Image"
    CATEGORY = "image"
    INPUTS = {"image": Link("IMAGE")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any):
        return (1.0 - image,)


class ImageBlend(Node):
    """Blend image2 over image1 with a blend mode; image2 is resized (bicubic, centre crop) to image1 first."""

    DISPLAY_NAME = "Image Blend"
    CATEGORY = "image/postprocessing"
    INPUTS = {"image1": Link("IMAGE"), "image2": Link("IMAGE"),
              "blend_factor": Float(0.5, min=0.0, max=1.0, step=0.01),
              "blend_mode": Combo(("normal", "multiply", "screen", "overlay", "soft_light", "difference"))}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image1: Any, image2: Any, blend_factor: float, blend_mode: str = "normal"):
        import torch

        from nodegraph.api import resample

        if image1.shape[-1] < image2.shape[-1]:  # ComfyUI's alpha fix: match image1's channels
            image2 = image2[..., :image1.shape[-1]]
        elif image1.shape[-1] > image2.shape[-1]:
            image1 = torch.nn.functional.pad(image1, (0, 1), value=1.0)
        if image1.shape != image2.shape:
            image2 = resample(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bicubic",
                              "center").movedim(1, -1)
        a, b = image1, image2.to(image1.dtype)
        if blend_mode == "multiply":
            mixed = a * b
        elif blend_mode == "screen":
            mixed = 1 - (1 - a) * (1 - b)
        elif blend_mode == "overlay":
            mixed = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
        elif blend_mode == "soft_light":
            g = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
            mixed = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
        elif blend_mode == "difference":
            mixed = a - b
        else:
            mixed = b
        return ((a * (1 - blend_factor) + mixed * blend_factor).clamp(0.0, 1.0),)


#: Longest text PreviewAny shows in the editor (its STRING output keeps all of it).
PREVIEW_TEXT_CHARS = 100_000


def preview_text(value: Any) -> str:
    """Any value as PreviewAny shows it: strings as they are, numbers with str(), the rest as indented JSON when
    it is JSON, else str() (tensors summarised by torch)."""
    import json

    if value is None:
        return "None"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError, RecursionError):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - a value whose __str__ fails still gets a preview
            return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Preview any input value as text."""

    DISPLAY_NAME = "Preview as Text"
    CATEGORY = "utilities"
    OUTPUT_NODE = True
    INPUTS = {"source": Link("*")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, source: Any = None):
        text = preview_text(source)
        shown = text if len(text) <= PREVIEW_TEXT_CHARS else \
            f"{text[:PREVIEW_TEXT_CHARS]}\n… ({len(text):,} characters in all)"
        return NodeOutput((text,), {"text": [shown]})


class ImageCompare(Node):
    """Compares two images side by side with a slider."""

    DISPLAY_NAME = "Compare Images"
    CATEGORY = "image"
    OUTPUT_NODE = True
    INPUTS = {"image_a": Link("IMAGE", optional=True), "image_b": Link("IMAGE", optional=True),
              "compare_view": DisplayWidget("IMAGECOMPARE", default=["", ""], socketless=True)}
    OUTPUTS = ()

    def execute(self, ctx, compare_view: Any = None, image_a: Any = None, image_b: Any = None):
        ui: dict[str, Any] = {"a_images": [], "b_images": []}
        for key, images, prefix in (("a_images", image_a, "comfy.compare.a"), ("b_images", image_b, "comfy.compare.b")):
            if images is not None and len(images) > 0:
                ui[key] = ctx.files.save_images(images, f"{prefix}_{uuid.uuid4().hex[:8]}", "temp", png_text(ctx))
        return NodeOutput((), ui)


_COLOR_SPACE_TIP = ("Colorspace of the input tensor. The EXR is always written as scene-linear in the matching gamut.\n"
                    "sRGB — input is sRGB-encoded Rec.709; the inverse sRGB EOTF is applied.\n"
                    "HDR — input is HLG-encoded Rec.2020 (BT.2100); the inverse HLG OETF is applied to get "
                    "scene-linear light.\nlinear — input is already scene-linear (Rec.709 primaries); written "
                    "through unchanged. Use this for renderer/compositor output.")


def _format_options() -> dict[str, dict[str, Any]]:
    options = {}
    for fmt, (depths, spaces) in STILL_FORMATS.items():
        tip = {"tooltip": _COLOR_SPACE_TIP} if fmt == "exr" else {}
        options[fmt] = {"bit_depth": advanced(Combo(depths, default=depths[0])),
                        "input_color_space": advanced(Combo(spaces, default=spaces[0], **tip))}
    return options


class SaveImageAdvanced(Node):
    """Saves the input images to your ComfyUI output directory."""

    DISPLAY_NAME = "Save Image (Advanced)"
    CATEGORY = "image"
    OUTPUT_NODE = True
    INPUTS = {"images": Link("IMAGE", tooltip="The images to save."),
              "filename_prefix": String("ComfyUI", tooltip="The prefix for the file to save; may include a "
                                                           "subfolder."),
              "format": DynamicCombo(_format_options(), tooltip="The file format in which to save the image.")}
    OUTPUTS = (Output("IMAGE", "images"),)

    def execute(self, ctx, images: Any, filename_prefix: str, format: dict[str, Any]):
        fmt = format["format"]
        depth = format.get("bit_depth", STILL_FORMATS[fmt][0][0])
        space = format.get("input_color_space", "sRGB")
        metadata = png_text(ctx)
        entries = []
        for image in images:
            data = encode_with_metadata(image, fmt, depth, space, metadata)
            out = OutputFile(ctx.files.folder("output"), filename_prefix, fmt)
            try:
                out.handle.write(data)
            except BaseException:
                out.discard()
                raise
            out.close()
            entries.append(out.entry)
        return NodeOutput((images,), {"images": entries})


#: SVG link type: one or more SVG documents (``SvgDocuments``; plain text or a list of texts are accepted too)
SVG = "SVG"


@dataclass(frozen=True)
class SvgDocuments:
    """An SVG value: the documents' texts, one per batch item."""

    texts: tuple[str, ...]


def svg_texts(value: Any) -> list[str]:
    """The SVG documents of an SVG value (``SvgDocuments``, a text, UTF-8 bytes or a list of them)."""
    items = getattr(value, "texts", value)  # SvgDocuments (duck-typed: a pack module may be loaded twice)
    items = [items] if isinstance(items, (str, bytes)) else list(items)
    texts = [i.decode("utf-8") if isinstance(i, bytes) else i for i in items]
    if not texts or not all(isinstance(t, str) and "<svg" in t for t in texts):
        raise ValueError("svg: expected SVG documents (text with an <svg> element); connect a node that outputs SVG")
    return texts


def with_svg_metadata(text: str, metadata: dict[str, Any]) -> str:
    """``text`` with ComfyUI's ``<metadata>`` element (the run's prompt and workflow as JSON in CDATA) after its first
    ``<svg …>`` tag; unchanged without metadata or an svg tag."""
    if not metadata:
        return text
    body = json.dumps(metadata, indent=2, default=str).replace("]]>", "]]]]><![CDATA[>")
    element = f"\n  <metadata><![CDATA[\n{body}\n  ]]></metadata>\n"
    return re.sub(r"(<svg[^>]*>)", lambda m: m.group(1) + element, text, count=1)


class SaveSVGNode(Node):
    """Save SVG files on disk."""

    DESCRIPTION = "Save SVG files on disk."
    CATEGORY = "image/save"
    OUTPUT_NODE = True
    INPUTS = {"svg": Link(SVG),
              "filename_prefix": String("svg/ComfyUI", tooltip="The prefix for the file to save. This may include "
                                        "formatting information such as %date:yyyy-MM-dd% or %Empty Latent "
                                        "Image.width% to include values from nodes.")}
    OUTPUTS = ()

    def execute(self, ctx, svg: Any, filename_prefix: str = "svg/ComfyUI"):
        metadata = run_metadata(ctx)
        entries = []
        for number, text in enumerate(svg_texts(svg)):
            out = OutputFile(ctx.files.folder("output"), filename_prefix.replace("%batch_num%", str(number)), "svg")
            try:
                out.handle.write(with_svg_metadata(text, metadata).encode("utf-8"))
            except BaseException:
                out.discard()
                raise
            out.close()
            entries.append(out.entry)
        return NodeOutput((), {"images": entries})


@hookimpl
def nodegraph_nodes():
    """Image load/save nodes."""
    return [LoadImage, LoadImageOutput, LoadImageMask, SaveImage, PreviewImage, EmptyImage, ImageInvert, ImageBlend,
            PreviewAny, ImageCompare, SaveImageAdvanced, SaveSVGNode]


@hookimpl
def nodegraph_types():
    """SVG: vector images (ComfyUI's API nodes make them; SaveSVGNode saves them)."""
    return {SVG: "SVG documents, one per batch item (SaveSVGNode saves them as .svg)"}
