"""Video: the VIDEO type, loading, creating, splitting and saving video and animated images (PyAV)."""

from __future__ import annotations

import hashlib
from typing import Any

from nodegraph.api import (Boolean, Combo, Float, Int, Link, MediaError, Node, NodeOutput, Output,
                           OutputFile, String, VideoFromComponents, VideoFromFile, check_audio, encode_video, hookimpl,
                           input_audio, input_videos, load_audio, run_metadata, safe_join, save_animated_png,
                           save_animated_webp, save_audio, upload_combo)

#: SaveVideo's choices, as ComfyUI offers them (``auto`` is mp4 / h264).
VIDEO_FORMATS = ("auto", "mp4")
VIDEO_CODECS = ("auto", "h264")
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _file_stamp(config: Any, name: str) -> str:
    """A video's modification time and size (ComfyUI re-runs LoadVideo when the mtime changes; hashing is slow)."""
    path = safe_join(config.input_dir, name)
    if not path.is_file():
        return "missing"
    stat = path.stat()
    return f"{stat.st_mtime_ns}:{stat.st_size}"


def _check_frames(images: Any, node: str) -> None:
    if getattr(images, "ndim", 0) != 4 or images.shape[0] == 0:
        raise MediaError(f"{node}: images must be an IMAGE batch [N, H, W, C] with at least one frame, got shape "
                         f"{tuple(getattr(images, 'shape', ()))}")


def _save(ctx: Any, prefix: str, ext: str, write: Any) -> dict[str, str]:
    """Reserve ``{prefix}_{n:05}_.{ext}`` in the output folder, let ``write(file)`` fill it; removed if it fails."""
    out = OutputFile(ctx.files.folder("output"), prefix, ext)
    try:
        write(out)
    except BaseException:
        out.discard()
        raise
    out.close()
    return out.entry


class LoadVideo(Node):
    """Load a video file from the input folder (decoded when its frames are used)."""

    DISPLAY_NAME = "Load Video"
    CATEGORY = "image/video"
    INPUTS = {"file": upload_combo(input_videos, "video", tooltip="a video file in the input folder")}
    OUTPUTS = (Output("VIDEO"),)

    @classmethod
    def fingerprint(cls, config, **constants):
        return _file_stamp(config, constants["file"])

    def execute(self, ctx, file: str):
        return (VideoFromFile(ctx.files.input_path(file)),)


class CreateVideo(Node):
    """Create a video from images."""

    DISPLAY_NAME = "Create Video"
    CATEGORY = "image/video"
    INPUTS = {"images": Link("IMAGE", tooltip="The images to create a video from."),
              "fps": Float(30.0, min=1.0, max=120.0, step=1.0),
              "audio": Link("AUDIO", optional=True, tooltip="The audio to add to the video.")}
    OUTPUTS = (Output("VIDEO"),)

    def execute(self, ctx, images: Any, fps: float, audio: Any = None):
        _check_frames(images, "CreateVideo")
        if audio is not None:
            check_audio(audio, "CreateVideo audio")
        return (VideoFromComponents(images, fps, audio),)


class GetVideoComponents(Node):
    """Extracts all components from a video: frames, audio, and framerate."""

    DISPLAY_NAME = "Extract frame"
    CATEGORY = "image/video"
    INPUTS = {"video": Link("VIDEO", tooltip="The video to extract components from.")}
    OUTPUTS = (Output("IMAGE", "images"), Output("AUDIO", "audio"), Output("FLOAT", "fps"))

    def execute(self, ctx, video: Any):
        parts = video.get_components()
        return (parts.images, parts.audio, float(parts.frame_rate))


class SaveVideo(Node):
    """Saves the input images to your ComfyUI output directory."""

    DISPLAY_NAME = "Save Video"
    CATEGORY = "image/video"
    OUTPUT_NODE = True
    INPUTS = {"video": Link("VIDEO", tooltip="The video to save."),
              "filename_prefix": String("video/ComfyUI", tooltip="The prefix for the file to save; may include a "
                                        "subfolder."),
              "format": Combo(VIDEO_FORMATS, default="auto", tooltip="The format to save the video as."),
              "codec": Combo(VIDEO_CODECS, default="auto", tooltip="The codec to use for the video.")}
    OUTPUTS = ()

    def execute(self, ctx, video: Any, filename_prefix: str = "video/ComfyUI", format: str = "auto",
                codec: str = "auto"):
        meta = run_metadata(ctx)
        entry = _save(ctx, filename_prefix, "mp4", lambda out: (out.close(), video.save_to(
            out.path, container="mp4", codec="h264" if codec == "auto" else codec, metadata=meta)))
        return NodeOutput((), {"images": [entry], "animated": [True]})


class SaveWEBM(Node):
    """Save images as a WebM video (VP9 or AV1) with the workflow in its tags."""

    CATEGORY = "image/video"
    OUTPUT_NODE = True
    INPUTS = {"images": Link("IMAGE"), "filename_prefix": String("ComfyUI"),
              "codec": Combo(("vp9", "av1")),
              "fps": Float(24.0, min=0.01, max=1000.0, step=0.01),
              "crf": Float(32.0, min=0, max=63.0, step=1, tooltip="Higher crf means lower quality with a smaller "
                           "file size, lower crf means higher quality higher filesize.")}
    OUTPUTS = ()

    def execute(self, ctx, images: Any, filename_prefix: str, codec: str, fps: float, crf: float):
        _check_frames(images, "SaveWEBM")
        meta = run_metadata(ctx)
        entry = _save(ctx, filename_prefix, "webm", lambda out: (out.close(), encode_video(
            out.path, images, fps, container="webm", codec=codec, crf=crf, metadata=meta)))
        return NodeOutput((), {"images": [entry], "animated": [True]})


class SaveAnimatedWEBP(Node):
    """Save images as one animated WEBP (the workflow in its EXIF, as ComfyUI writes it)."""

    CATEGORY = "image/animation"
    OUTPUT_NODE = True
    INPUTS = {"images": Link("IMAGE"), "filename_prefix": String("ComfyUI"),
              "fps": Float(6.0, min=0.01, max=1000.0, step=0.01),
              "lossless": Boolean(True), "quality": Int(80, min=0, max=100, step=None),
              "method": Combo(tuple(WEBP_METHODS))}
    OUTPUTS = ()

    def execute(self, ctx, images: Any, filename_prefix: str, fps: float, lossless: bool, quality: int,
                method: str):
        _check_frames(images, "SaveAnimatedWEBP")
        meta = run_metadata(ctx)
        entry = _save(ctx, filename_prefix, "webp", lambda out: save_animated_webp(
            out.handle, images, fps, lossless=lossless, quality=quality, method=WEBP_METHODS[method], metadata=meta))
        ui: dict[str, Any] = {"images": [entry]}
        if images.shape[0] > 1:
            ui["animated"] = [True]
        return NodeOutput((), ui)


class SaveAnimatedPNG(Node):
    """Save images as one animated PNG (the workflow in ``comf`` chunks, as ComfyUI writes it)."""

    CATEGORY = "image/animation"
    OUTPUT_NODE = True
    INPUTS = {"images": Link("IMAGE"), "filename_prefix": String("ComfyUI"),
              "fps": Float(6.0, min=0.01, max=1000.0, step=0.01), "compress_level": Int(4, min=0, max=9, step=None)}
    OUTPUTS = ()

    def execute(self, ctx, images: Any, filename_prefix: str, fps: float, compress_level: int):
        _check_frames(images, "SaveAnimatedPNG")
        meta = run_metadata(ctx)
        entry = _save(ctx, filename_prefix, "png", lambda out: save_animated_png(
            out.handle, images, fps, compress_level=compress_level, metadata=meta))
        ui: dict[str, Any] = {"images": [entry]}
        if images.shape[0] > 1:
            ui["animated"] = [True]
        return NodeOutput((), ui)


class LoadAudio(Node):
    """Load the sound of an audio or video file from the input folder."""

    DISPLAY_NAME = "Load Audio"
    CATEGORY = "audio"
    INPUTS = {"audio": upload_combo(input_audio, "audio")}
    OUTPUTS = (Output("AUDIO"),)

    @classmethod
    def fingerprint(cls, config, **constants):
        path = safe_join(config.input_dir, constants["audio"])
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"

    def execute(self, ctx, audio: str):
        return (load_audio(ctx.files.input_path(audio)),)


class SaveAudio(Node):
    """Save audio as FLAC files (one per batch item) with the workflow in their tags."""

    DISPLAY_NAME = "Save Audio (FLAC)"
    CATEGORY = "audio"
    OUTPUT_NODE = True
    INPUTS = {"audio": Link("AUDIO"), "filename_prefix": String("audio/ComfyUI")}
    OUTPUTS = ()
    FORMAT = "flac"

    def execute(self, ctx, audio: Any, filename_prefix: str = "audio/ComfyUI"):
        waveform, _ = check_audio(audio, "SaveAudio audio")
        meta = run_metadata(ctx)
        entries = [_save(ctx, filename_prefix, self.FORMAT, lambda out, i=i: (out.close(), save_audio(
            out.path, audio, self.FORMAT, index=i, metadata=meta))) for i in range(waveform.shape[0])]
        return NodeOutput((), {"audio": entries})



class VideoSlice(Node):
    """Trim a video to start_time (seconds; negative counts from the end) and a duration (0: to the end)."""

    NAME = "Video Slice"
    DISPLAY_NAME = "Trim Video"
    CATEGORY = "video"
    INPUTS = {"video": Link("VIDEO"),
              "start_time": Float(0.0, min=-1e5, max=1e5, step=0.001, tooltip="Start time in seconds"),
              "duration": Float(0.0, min=0.0, step=0.001, tooltip="Duration in seconds, or 0 for unlimited duration"),
              "strict_duration": Boolean(False, tooltip="If True, when the specified duration is not possible, an "
                                                        "error will be raised.")}
    OUTPUTS = (Output("VIDEO"),)

    def execute(self, ctx, video: Any, start_time: float, duration: float, strict_duration: bool):
        import math

        parts = video.get_components()
        fps, count = float(parts.frame_rate), int(parts.images.shape[0])
        total = count / fps
        start = max(total + start_time, 0.0) if start_time < 0 else start_time
        available = min(total, -start_time) if start_time < 0 else max(total - start_time, 0.0)
        length = min(duration, available) if duration else available
        first, end = math.ceil(start * fps - 1e-6), min(math.ceil((start + length) * fps - 1e-6), count)
        if (strict_duration and duration and available + 1e-6 < duration) or end <= first:
            raise ValueError(f"Video Slice: cannot take {duration or 'the rest'} s from {start_time} s of a "
                             f"{total:.3f} s video ({count} frames at {fps:g} fps); choose a start_time inside the "
                             "video, a shorter duration, or turn strict_duration off")
        audio = parts.audio
        if audio is not None:
            rate = int(audio["sample_rate"])
            wave = audio["waveform"][..., round(first / fps * rate):round(end / fps * rate)]
            audio = {**audio, "waveform": wave}
        return (VideoFromComponents(parts.images[first:end], parts.frame_rate, audio),)


@hookimpl
def nodegraph_types():
    """VIDEO and AUDIO, as ComfyUI passes them."""
    return {"VIDEO": "a video: frames (IMAGE [N, H, W, C]), frame rate and optional AUDIO; from LoadVideo or "
                     "CreateVideo",
            "AUDIO": "sound: {'waveform': [B, C, T] float32, 'sample_rate': int}, ComfyUI's AUDIO"}


@hookimpl
def nodegraph_nodes():
    """The video nodes."""
    return [LoadVideo, CreateVideo, GetVideoComponents, SaveVideo, SaveWEBM, SaveAnimatedWEBP, SaveAnimatedPNG,
            LoadAudio, SaveAudio, VideoSlice]
