"""Video and audio files for nodes: the VIDEO value, PyAV decoding/encoding, animated WEBP/PNG, saved-file naming.

PyAV (``av``, whose wheels bundle FFmpeg) is imported only when a file is actually read or written.
"""

from __future__ import annotations

from .animated import frame_duration_ms, read_apng_metadata, save_animated_png, save_animated_webp
from .audio import AUDIO_FORMATS, check_audio, load_audio, save_audio
from .codecs import (AUDIO_SUFFIXES, VIDEO_SUFFIXES, MediaError, VideoInfo, decode_video, demuxer_for, encode_video,
                     probe_video, verify_upload)
from .inputs import UploadCombo, input_audio, input_videos, upload_combo
from .metadata import is_tagged_media, read_container_tags
from .outputs import OutputFile, run_metadata
from .video import Video, VideoComponents, VideoFromComponents, VideoFromFile

__all__ = [
    "AUDIO_FORMATS", "AUDIO_SUFFIXES", "check_audio", "decode_video", "demuxer_for", "encode_video",
    "frame_duration_ms", "input_audio", "input_videos", "is_tagged_media", "load_audio", "MediaError", "OutputFile", "probe_video",
    "read_apng_metadata", "read_container_tags", "run_metadata", "save_animated_png", "save_animated_webp", "save_audio", "upload_combo",
    "UploadCombo", "verify_upload", "Video", "VIDEO_SUFFIXES", "VideoComponents", "VideoFromComponents",
    "VideoFromFile", "VideoInfo",
]
