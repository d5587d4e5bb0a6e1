"""Video files through PyAV (FFmpeg): probe, decode to IMAGE frames + AUDIO, encode frames (+ audio) to mp4/webm.

Files are opened with the demuxer their extension names, never a guessed one: FFmpeg's probing could otherwise pick
a playlist demuxer (HLS, concat) for a hostile upload, which reads other files or URLs. Only the ``file`` protocol is
allowed when opening a path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .outputs import as_text

if TYPE_CHECKING:
    from torch import Tensor

#: Extensions of video files (ComfyUI lists files whose MIME type is video/*) → the FFmpeg demuxer to open them.
VIDEO_DEMUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".webm": "matroska", ".mkv": "matroska",
                  ".avi": "avi", ".mpg": "mpeg", ".mpeg": "mpeg", ".ts": "mpegts", ".ogv": "ogg", ".flv": "flv"}
#: Extensions of audio files → demuxer.
AUDIO_DEMUXERS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".opus": "ogg", ".m4a": "mp4",
                  ".aac": "aac"}
VIDEO_SUFFIXES = tuple(VIDEO_DEMUXERS)
AUDIO_SUFFIXES = tuple(AUDIO_DEMUXERS)
#: container → (FFmpeg muxer, default video codec, audio codec).
CONTAINERS = {"mp4": ("mp4", "h264", "aac"), "webm": ("webm", "vp9", "libopus")}
#: codec names of the nodes → FFmpeg encoders (libx264 is the h264 encoder in PyAV's wheels).
ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
#: x264 gave different files for the same frames from one encode to the next unless its input rows are a multiple of
#: 64 pixels wide (it reads past shorter rows) and its threads are slices: frames are padded to 64 × 16 and the
#: padding cropped away in the stream header (crop-rect), so the same frames make the same file in every process.
X264_PARAMS = "threads=4:sliced-threads=1"
X264_MULTIPLE = (64, 16)
#: Most pixels decoded from one file (frames × height × width): 1 GiB of float32 RGB frames.
MAX_DECODED_PIXELS = (1 << 30) // 12


class MediaError(ValueError):
    """A media file cannot be read or written; the message names the file and the fix."""


@dataclass(frozen=True)
class VideoInfo:
    """What a probe of a video file says without decoding it."""

    width: int
    height: int
    fps: Fraction
    frames: int  # 0 when the container does not say
    duration: float  # seconds; 0.0 when unknown
    has_audio: bool
    metadata: dict[str, str]


def demuxer_for(name: str | Path, audio_too: bool = True) -> str:
    """The FFmpeg demuxer for a file name's extension; MediaError naming the accepted extensions if there is none."""
    suffix = Path(str(name)).suffix.lower()
    table = {**VIDEO_DEMUXERS, **(AUDIO_DEMUXERS if audio_too else {})}
    if suffix not in table:
        raise MediaError(f"{Path(str(name)).name!r} is not a video or audio file this server reads; use one of "
                         f"{', '.join(sorted(table))}")
    return table[suffix]


def open_media(source: str | Path | bytes, name: str | Path | None = None) -> Any:
    """An input container for a path (or bytes named ``name``) with its extension's demuxer and no other protocol."""
    import av

    fmt = demuxer_for(name if name is not None else source)  # type: ignore[arg-type]
    try:
        if isinstance(source, bytes):
            return av.open(io.BytesIO(source), mode="r", format=fmt)
        return av.open(str(source), mode="r", format=fmt, options={"protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, ValueError) as exc:
        shown = Path(str(name if name is not None else source)).name
        raise MediaError(f"{shown!r} cannot be read as {fmt} ({exc}); is it a whole, valid file?") from None


def _info(container: Any, count: bool = False) -> VideoInfo:
    if not container.streams.video:
        raise MediaError("the file has no video stream; LoadVideo needs a video (LoadAudio reads audio-only files)")
    stream = container.streams.video[0]
    fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
    duration = float(container.duration / 1_000_000) if container.duration else 0.0
    frames = int(stream.frames or 0)
    if not frames and count:  # matroska/webm headers carry no frame count: count the packets (no decoding)
        frames = sum(1 for packet in container.demux(stream) if packet.size)
    return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=fps or Fraction(1),
                     frames=frames, duration=duration, has_audio=bool(container.streams.audio),
                     metadata={str(k): str(v) for k, v in container.metadata.items()})


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate, frame count, audio presence and container tags of a video file, without decoding."""
    with open_media(path) as container:
        return _info(container, count=True)


def verify_upload(data: bytes, name: str) -> str:
    """Check that an uploaded video/audio file opens with its extension's demuxer and has a stream; its format name."""
    with open_media(data, name) as container:
        if not (container.streams.video or container.streams.audio):
            raise MediaError(f"{name!r} has no video or audio stream")
        for stream in (*container.streams.video[:1], *container.streams.audio[:1]):
            if stream.codec_context is None:
                raise MediaError(f"{name!r}: FFmpeg has no decoder for its {stream.type} stream")
        return str(container.format.name)


def _to_uint8(images: "Tensor") -> Any:
    import torch

    return (images[..., :3].detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def decode_video(path: str | Path) -> tuple["Tensor", Fraction, dict[str, Any] | None]:
    """All frames of a video file as IMAGE [N, H, W, 3] float32 0..1, its frame rate and its audio (or None)."""
    import numpy as np
    import torch

    from .audio import decode_audio_stream

    with open_media(path) as container:
        info = _info(container)
        if info.frames and info.frames * info.width * info.height > MAX_DECODED_PIXELS:
            raise MediaError(f"{Path(str(path)).name!r} has {info.frames} frames of {info.width}x{info.height}: over "
                             f"the {MAX_DECODED_PIXELS} decoded pixels a load may hold; trim or scale the video first")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) * info.width * info.height > MAX_DECODED_PIXELS:
                raise MediaError(f"{Path(str(path)).name!r} decodes to more than {MAX_DECODED_PIXELS} pixels; trim "
                                 "or scale the video first")
        if not frames:
            raise MediaError(f"{Path(str(path)).name!r} has a video stream but no frame could be decoded")
        audio = None
    if info.has_audio:
        with open_media(path) as container:
            audio = decode_audio_stream(container, container.streams.audio[0])
    images = torch.from_numpy(np.stack(frames)).float() / 255.0
    return images, info.fps, audio


def _pad(images: "Tensor", multiple_w: int, multiple_h: int) -> "Tensor":
    """Pad a frame batch on the right/bottom to the given multiples by repeating the last column/row."""
    import torch

    h, w = images.shape[1:3]
    if pad_h := (-h) % multiple_h:
        images = torch.cat([images, images[:, -1:].expand(-1, pad_h, -1, -1)], dim=1)
    if pad_w := (-w) % multiple_w:
        images = torch.cat([images, images[:, :, -1:].expand(-1, -1, pad_w, -1)], dim=2)
    return images


def _encoder_options(codec: str, crf: float | None, crop_w: int, crop_h: int) -> dict[str, str]:
    """FFmpeg encoder options: h264 deterministic and cropped (crf only when given: x264's default is 23), vp9/av1
    constant quality at ``crf`` (default 32, as SaveWEBM)."""
    if codec == "h264":
        opts = {"x264-params": f"{X264_PARAMS}:crop-rect=0,0,{crop_w},{crop_h}"}
        if crf is not None:
            opts["crf"] = str(int(crf))
        return opts
    opts = {"crf": str(int(crf if crf is not None else 32))}
    if codec == "vp9":
        opts.update({"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"})
    else:
        opts["preset"] = "8"
    return opts


def encode_video(target: str | Path | io.BytesIO, images: "Tensor", fps: float | Fraction, *,
                 container: str = "mp4", codec: str = "auto", crf: float | None = None,
                 audio: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None) -> None:
    """Write IMAGE frames (+ AUDIO) as an mp4 (h264 + aac) or webm (vp9/av1 + opus) with ``metadata`` tags.

    Odd sizes are padded to even (yuv420p, what browsers play); h264's further padding is cropped in its header.
    Tags hold ``metadata`` values as text (JSON for objects), as ComfyUI writes ``prompt`` and ``workflow``; mp4 keeps
    them through ``movflags=use_metadata_tags``.
    """
    import av

    from .audio import encode_audio_stream

    if container not in CONTAINERS:
        raise MediaError(f"container {container!r} is not supported; use one of {', '.join(CONTAINERS)}")
    muxer, default_codec, audio_codec = CONTAINERS[container]
    codec = default_codec if codec == "auto" else codec
    if codec not in ENCODERS or (container == "mp4") != (codec == "h264"):
        allowed = "h264" if container == "mp4" else "vp9 or av1"
        raise MediaError(f"codec {codec!r} cannot go in a {container} file; use {allowed}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise MediaError(f"frames must be an IMAGE batch [N, H, W, C] with N ≥ 1, got shape {tuple(images.shape)}")
    rate = Fraction(round(float(fps) * 1000), 1000)
    if rate <= 0:
        raise MediaError(f"fps must be positive, got {fps}")
    height, width = int(images.shape[1]) + int(images.shape[1]) % 2, int(images.shape[2]) + int(images.shape[2]) % 2
    padded = _pad(images, *X264_MULTIPLE) if codec == "h264" else _pad(images, 2, 2)  # yuv420p needs even sizes
    frames = _to_uint8(padded)
    options = {"movflags": "use_metadata_tags" + ("" if isinstance(target, io.BytesIO) else "+faststart")} \
        if muxer == "mp4" else {}
    out = av.open(target if isinstance(target, io.BytesIO) else str(target), mode="w", format=muxer,
                  options=options)
    try:
        for key, value in (metadata or {}).items():
            out.metadata[key] = as_text(value)
        stream = out.add_stream(ENCODERS[codec], rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p10le" if codec == "av1" else "yuv420p"
        stream.options = _encoder_options(codec, crf, frames.shape[2] - width, frames.shape[1] - height)
        if codec == "vp9":
            stream.bit_rate = 0  # constant quality: crf alone decides
        audio_stream = None
        if audio is not None:
            audio_stream = encode_audio_stream(out, audio, audio_codec)
        for i, array in enumerate(frames):
            # converted here, not inside encode(): the encoder's own conversion made x264's output vary
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format=stream.pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if audio_stream is not None:
            audio_stream.flush(out)
    except av.FFmpegError as exc:
        raise MediaError(f"encoding {codec} in {container} failed: {exc}") from None
    finally:
        out.close()
