"""Reading back the run metadata (``prompt``, ``workflow``, nodegraph's manifest) that the save nodes put into media:
container tags of videos and audio (PyAV), ``comf`` chunks of animated PNGs (streamed, never the whole file)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from .codecs import AUDIO_DEMUXERS, VIDEO_DEMUXERS, MediaError, open_media

#: Longest single tag or chunk read back (a workflow of thousands of nodes fits; a hostile file does not).
MAX_TAG_BYTES = 64 << 20
#: Extensions whose container tags may carry a workflow (videos and audio PyAV reads).
TAGGED_SUFFIXES = tuple(VIDEO_DEMUXERS) + tuple(AUDIO_DEMUXERS)
#: Tags FFmpeg writes on its own (container bookkeeping, not run metadata): left out of what is read back.
FFMPEG_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder", "handler_name", "vendor_id",
                         "language", "duration", "creation_time"})


def is_tagged_media(path: str | Path) -> bool:
    """Whether ``path`` names a video or audio file by its extension (its workflow lies in container tags)."""
    return Path(str(path)).suffix.lower() in TAGGED_SUFFIXES


def read_container_tags(path: str | Path) -> tuple[str, dict[str, str]]:
    """A video or audio file's kind (``MP4``, ``WEBM``, ``FLAC``, …) and its container and stream tags, keys in lower
    case (matroska stores them upper case), FFmpeg's own bookkeeping tags left out; raises MediaError naming the
    file when it cannot be read."""
    path = Path(path)
    with open_media(path) as container:
        tags: dict[str, str] = {}
        for source in [container.metadata] + [stream.metadata for stream in container.streams]:
            for key, value in source.items():
                if str(key).lower() in FFMPEG_TAGS:
                    continue
                if len(value) > MAX_TAG_BYTES:
                    raise MediaError(f"{path.name!r}: its {key!r} tag is larger than {MAX_TAG_BYTES >> 20} MiB")
                tags.setdefault(str(key).lower(), str(value))
    return path.suffix.lstrip(".").upper(), tags


def read_apng_metadata(path: Any) -> dict[str, str]:
    """The ``comf`` chunks of a PNG as ``{key: text}`` (what SaveAnimatedPNG wrote); reads chunk headers and skips
    the image data, so a large file costs no memory."""
    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return out
        while len(header := fh.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"comf" and length <= MAX_TAG_BYTES:
                key, _, value = fh.read(length).partition(b"\0")
                out.setdefault(key.decode("latin-1"), value.decode("latin-1"))
                fh.seek(4, 1)  # CRC
            elif kind == b"IEND":
                break
            else:
                fh.seek(length + 4, 1)
    return out
