"""Still images in the formats SaveImageAdvanced offers: PNG 8-bit (Pillow), PNG 16-bit and OpenEXR 32-bit float
(PyAV's image encoders), with the run's metadata (prompt, workflow, provenance) in PNG tEXt chunks or EXR string
attributes. EXR pixels are scene-linear: sRGB input has the inverse sRGB curve applied, HDR (HLG, BT.2100) input
the inverse HLG OETF, linear input is written as it is.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from torch import Tensor

#: (format, bit depth) → the choices of input colour space, as SaveImageAdvanced lists them.
STILL_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "png": (("8-bit", "16-bit"), ("sRGB",)),
    "exr": (("32-bit float",), ("sRGB", "HDR", "linear")),
}
_PIX = {  # (format, depth, channels) → (frame layout given to the encoder, scale); PNG stores big-endian
    ("png", "16-bit", 1): ("gray16le", 65535.0), ("png", "16-bit", 3): ("rgb48le", 65535.0),
    ("png", "16-bit", 4): ("rgba64le", 65535.0),
    ("exr", "32-bit float", 1): ("grayf32le", 1.0), ("exr", "32-bit float", 3): ("gbrpf32le", 1.0),
    ("exr", "32-bit float", 4): ("gbrapf32le", 1.0),
}
_PRIMARIES = {"Rec.709": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
              "Rec.2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)}
#: EXR scanlines per chunk by compression code (OpenEXR file layout).
_EXR_LINES = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}


def srgb_to_linear(t: "Tensor") -> "Tensor":
    """Inverse sRGB transfer curve on the colour channels (alpha, a 4th channel, unchanged)."""
    import torch

    if t.shape[-1] == 4:
        return torch.cat([srgb_to_linear(t[..., :3]), t[..., 3:]], dim=-1)
    return torch.where(t <= 0.04045, t / 12.92, ((t.clamp(min=0.0) + 0.055) / 1.055) ** 2.4)


def hlg_to_linear(t: "Tensor") -> "Tensor":
    """Inverse HLG OETF (BT.2100 table 5) to scene-linear light on the colour channels."""
    import torch

    if t.shape[-1] == 4:
        return torch.cat([hlg_to_linear(t[..., :3]), t[..., 3:]], dim=-1)
    a, b, c = 0.17883277, 0.28466892, 0.55991072928
    return torch.where(t <= 0.5, t * t / 3.0, (torch.exp((t.clamp(min=0.5) - c) / a) + b) / 12.0)


def _av_encode(codec: str, array: Any, layout: str) -> bytes:
    import av

    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.height, ctx.width = array.shape[:2]
    ctx.pix_fmt = layout.replace("16le", "16be").replace("48le", "48be").replace("64le", "64be")
    ctx.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(array, format=layout)
    if ctx.pix_fmt != layout:
        frame = frame.reformat(format=ctx.pix_fmt)
    frame.pts = 0
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def encode_still(image: "Tensor", fmt: str, bit_depth: str, colorspace: str = "sRGB") -> bytes:
    """One image [H, W, C] (C = 1, 3 or 4; or [H, W]) encoded as ``fmt`` at ``bit_depth``; raises ``ValueError``
    naming the supported combinations."""
    import numpy as np

    if fmt not in STILL_FORMATS or bit_depth not in STILL_FORMATS[fmt][0] or colorspace not in STILL_FORMATS[fmt][1]:
        raise ValueError(f"{fmt}/{bit_depth}/{colorspace} is not a supported combination; choose png with 8-bit or "
                         "16-bit (sRGB), or exr with 32-bit float (sRGB, HDR or linear)")
    image = image.detach().float().cpu()
    if image.ndim == 2:
        image = image.unsqueeze(-1)
    channels = int(image.shape[-1])
    if channels not in (1, 3, 4):
        raise ValueError(f"images with {channels} channels cannot be saved; give 1 (grey), 3 (RGB) or 4 (RGBA)")
    if fmt == "png" and bit_depth == "8-bit":
        import torch
        from PIL import Image

        data = (image.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()  # rounded, as our SaveImage
        buffer = io.BytesIO()
        Image.fromarray(data[..., 0] if channels == 1 else data).save(buffer, format="PNG", compress_level=4)
        return buffer.getvalue()
    layout, scale = _PIX[(fmt, bit_depth, channels)]
    if fmt == "exr":
        image = srgb_to_linear(image) if colorspace == "sRGB" else hlg_to_linear(image) if colorspace == "HDR" \
            else image
        array = image.numpy().astype(np.float32)
    else:
        array = (image.clamp(0, 1) * scale).round().numpy().astype(np.uint16)
    return _av_encode(fmt, array[..., 0] if channels == 1 else array, layout)


def _texts(metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(key, value if isinstance(value, str) else json.dumps(value)) for key, value in metadata.items()]


def png_with_text(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    """A PNG with ``metadata`` (each value as JSON text unless a string) in tEXt chunks after the header chunk."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or not metadata:
        return data
    chunks = b""
    for key, text in _texts(metadata):
        body = key.encode("latin-1", "replace")[:79] + b"\x00" + text.encode("latin-1", "replace")
        chunks += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    header_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    return data[:header_end] + chunks + data[header_end:]


def _exr_attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\x00" + kind.encode() + b"\x00" + struct.pack("<i", len(value)) + value


def exr_with_attributes(data: bytes, metadata: Mapping[str, Any], colorspace: str = "sRGB") -> bytes:
    """An EXR with ``metadata`` as string attributes and the primaries of ``colorspace`` as ``chromaticities``
    (the scanline offset table is shifted by what the header grew)."""
    if not data.startswith(b"\x76\x2f\x31\x01"):
        return data
    extra = b"".join(_exr_attribute(key, "string", text.encode()) for key, text in _texts(metadata))
    extra += _exr_attribute("chromaticities", "chromaticities",
                            struct.pack("<8f", *_PRIMARIES["Rec.2020" if colorspace == "HDR" else "Rec.709"]))
    pos, window, compression = 8, None, 0
    while pos < len(data) and data[pos] != 0:
        name_end = data.index(b"\x00", pos)
        kind_end = data.index(b"\x00", name_end + 1)
        size = struct.unpack("<i", data[kind_end + 1:kind_end + 5])[0]
        value = data[kind_end + 5:kind_end + 5 + size]
        name = data[pos:name_end]
        if name == b"dataWindow":
            window = struct.unpack("<iiii", value)
        elif name == b"compression":
            compression = value[0]
        pos = kind_end + 5 + size
    if window is None:
        return data
    lines = _EXR_LINES.get(compression, 1)
    chunks = (window[3] - window[1] + 1 + lines - 1) // lines
    table = struct.unpack(f"<{chunks}Q", data[pos + 1:pos + 1 + 8 * chunks])
    shifted = struct.pack(f"<{chunks}Q", *(offset + len(extra) for offset in table))
    return data[:pos] + extra + b"\x00" + shifted + data[pos + 1 + 8 * chunks:]


def encode_with_metadata(image: "Tensor", fmt: str, bit_depth: str, colorspace: str,
                         metadata: Mapping[str, Any] | None) -> bytes:
    """``encode_still`` plus the run's ``metadata`` (none when it is empty or None)."""
    data = encode_still(image, fmt, bit_depth, colorspace)
    if fmt == "png":
        return png_with_text(data, metadata or {})
    return exr_with_attributes(data, metadata or {}, colorspace)
