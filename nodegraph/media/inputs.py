"""A file combo with ComfyUI's upload widget for video or audio (``video_upload``/``audio_upload`` in /object_info),
and the input folder listings LoadVideo and LoadAudio offer."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from ..inputs import ComboInput, OptionsProvider
from .codecs import AUDIO_SUFFIXES, VIDEO_SUFFIXES


class UploadCombo(ComboInput):
    """A COMBO of input files whose editor widget uploads files of ``upload`` kind (through ``/upload/image``)."""

    upload: Literal["image", "video", "audio"] = "video"

    def catalogue_entry(self, config: Any = None) -> list[Any]:
        values, opts = super().catalogue_entry(config)
        opts[f"{self.upload}_upload"] = True
        return [values, opts]


def upload_combo(choices: Sequence[str] | OptionsProvider, upload: Literal["image", "video", "audio"], *,
                 tooltip: str | None = None) -> UploadCombo:
    """A file combo with the editor's upload button for ``upload`` files (ComfyUI's ``{upload}_upload`` option)."""
    return UploadCombo(choices=choices if callable(choices) else tuple(choices), upload=upload, tooltip=tooltip)


def input_files(config: Any, suffixes: Sequence[str]) -> list[str]:
    """Files in the input folder (relative POSIX paths) whose extension is one of ``suffixes``, sorted."""
    if config is None or not config.input_dir.is_dir():
        return []
    root = config.input_dir
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def input_videos(config: Any) -> list[str]:
    """Video files in the input folder, for LoadVideo's combo."""
    return input_files(config, VIDEO_SUFFIXES)


def input_audio(config: Any) -> list[str]:
    """Audio and video files in the input folder (LoadAudio reads the sound of either), for LoadAudio's combo."""
    return input_files(config, AUDIO_SUFFIXES + VIDEO_SUFFIXES)
