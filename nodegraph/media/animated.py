"""Animated WEBP and PNG with Pillow, carrying the run's metadata where ComfyUI puts it.

WEBP: EXIF strings ``prompt:<json>`` in Model (0x0110) and each other entry (``workflow``, then nodegraph's manifest)
as ``key:<json>`` from Make (0x010F) downwards. APNG: ``comf`` chunks after the image data, ``key\\0<json>``.
"""

from __future__ import annotations

import json
from typing import IO, Any, Mapping

from .metadata import read_apng_metadata  # noqa: F401  (re-exported: it lived here)
from .outputs import as_text

EXIF_PROMPT_TAG = 0x0110
EXIF_FIRST_EXTRA_TAG = 0x010F
#: Lowest tag used for extra entries (0x0101.. are image geometry tags readers interpret).
EXIF_LAST_EXTRA_TAG = 0x0108


def _pils(images: Any) -> list[Any]:
    from ..imaging import image_to_pils

    return image_to_pils(images)


def frame_duration_ms(fps: float) -> int:
    """Each frame's duration in whole milliseconds, as ComfyUI computes it (``int(1000 / fps)``)."""
    return int(1000.0 / fps)


def webp_exif(first: Any, metadata: Mapping[str, Any]) -> Any:
    """The EXIF block holding ``metadata`` the way ComfyUI's SaveAnimatedWEBP writes it."""
    exif = first.getexif()
    tag = EXIF_FIRST_EXTRA_TAG
    for key, value in metadata.items():
        if key == "prompt":
            exif[EXIF_PROMPT_TAG] = f"prompt:{as_text(value)}"
        elif tag >= EXIF_LAST_EXTRA_TAG:
            exif[tag] = f"{key}:{as_text(value)}"
            tag -= 1
    return exif


def save_animated_webp(handle: IO[bytes], images: Any, fps: float, *, lossless: bool = True, quality: int = 80,
                       method: int = 4, metadata: Mapping[str, Any] | None = None) -> None:
    """Write an IMAGE batch as one animated WEBP (one frame per image, ``1000 / fps`` ms each)."""
    pils = _pils(images)
    pils[0].save(handle, format="WEBP", save_all=True, append_images=pils[1:], duration=frame_duration_ms(fps),
                 exif=webp_exif(pils[0], metadata or {}), lossless=lossless, quality=quality, method=method)


def save_animated_png(handle: IO[bytes], images: Any, fps: float, *, compress_level: int = 4,
                      metadata: Mapping[str, Any] | None = None) -> None:
    """Write an IMAGE batch as one animated PNG with the metadata in ``comf`` chunks after the image data."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (metadata or {}).items():
        text = as_text(value)
        if not text.isascii():  # chunks are Latin-1: JSON's escapes keep any text
            text = json.dumps(value)
        info.add(b"comf", key.encode("latin-1", "replace") + b"\0" + text.encode("latin-1"), after_idat=True)
    pils = _pils(images)
    pils[0].save(handle, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                 duration=frame_duration_ms(fps), append_images=pils[1:])
