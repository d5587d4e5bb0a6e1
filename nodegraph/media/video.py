"""The VIDEO value on links: frames (IMAGE [N, H, W, C] float 0..1) + frame rate + optional AUDIO, as ComfyUI passes
it. A video loaded from a file stays a path until its frames are asked for (decoded then, not kept)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .codecs import decode_video, encode_video, probe_video

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class VideoComponents:
    """A video's parts: ``images`` [N, H, W, C] float32 0..1, ``frame_rate``, ``audio`` (AUDIO dict or None)."""

    images: "Tensor"
    frame_rate: Fraction
    audio: dict[str, Any] | None = None


class Video:
    """Base of VIDEO values: frames, frame rate and audio, and how to save them."""

    def get_components(self) -> VideoComponents:
        """Frames, frame rate and audio (decoded now for a file)."""
        raise NotImplementedError

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        raise NotImplementedError

    @property
    def frame_rate(self) -> Fraction:
        """Frames per second."""
        raise NotImplementedError

    @property
    def frame_count(self) -> int:
        """Number of frames (from the container's header for a file; 0 if it does not say)."""
        raise NotImplementedError

    def save_to(self, path: str | Path, *, container: str = "mp4", codec: str = "auto", crf: float | None = None,
                metadata: Mapping[str, Any] | None = None) -> None:
        """Encode the video to ``path`` (mp4/h264 or webm/vp9|av1) with ``metadata`` tags."""
        parts = self.get_components()
        encode_video(path, parts.images, parts.frame_rate, container=container, codec=codec, crf=crf,
                     audio=parts.audio, metadata=metadata)


class VideoFromComponents(Video):
    """A video made from frames in memory (CreateVideo)."""

    def __init__(self, images: "Tensor", frame_rate: float | Fraction, audio: dict[str, Any] | None = None) -> None:
        self._parts = VideoComponents(images, Fraction(frame_rate).limit_denominator(1_000_000), audio)

    def get_components(self) -> VideoComponents:
        return self._parts

    def get_dimensions(self) -> tuple[int, int]:
        return int(self._parts.images.shape[2]), int(self._parts.images.shape[1])

    @property
    def frame_rate(self) -> Fraction:
        return self._parts.frame_rate

    @property
    def frame_count(self) -> int:
        return int(self._parts.images.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held (frames and audio), for the engine's cache budget."""
        size = int(self._parts.images.element_size() * self._parts.images.numel())
        if self._parts.audio is not None:
            wave = self._parts.audio["waveform"]
            size += int(wave.element_size() * wave.numel())
        return size

    def __repr__(self) -> str:
        w, h = self.get_dimensions()
        return f"Video({self.frame_count} frames, {w}x{h}, {float(self.frame_rate):g} fps" \
               f"{', audio' if self._parts.audio is not None else ''})"


class VideoFromFile(Video):
    """A video file, probed when made and decoded each time its frames are asked for (LoadVideo)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info = probe_video(self.path)

    def get_components(self) -> VideoComponents:
        images, rate, audio = decode_video(self.path)
        return VideoComponents(images, rate, audio)

    def get_dimensions(self) -> tuple[int, int]:
        return self.info.width, self.info.height

    @property
    def frame_rate(self) -> Fraction:
        return self.info.fps

    @property
    def frame_count(self) -> int:
        return self.info.frames

    @property
    def nbytes(self) -> int:
        """A path and a probe: tiny, whatever the file's length."""
        return 1024

    def __repr__(self) -> str:
        return f"VideoFromFile({self.path.name}, {self.info.frames} frames, {self.info.width}x{self.info.height}, " \
               f"{float(self.info.fps):g} fps)"
