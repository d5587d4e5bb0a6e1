"""nodegraph.media: frames → mp4/webm → frames keep count, size and rate (lossy within a PSNR floor), tags, audio,
deterministic h264, and files opened only with the demuxer their extension names."""

from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction

import pytest
import torch

from nodegraph.media import (MediaError, VideoFromComponents, VideoFromFile, decode_video, encode_video, load_audio,
                             probe_video, save_audio, verify_upload)

from .helpers import moving_frames, psnr, tone

#: Measured on moving_frames (12 × 64×96, a moving red square over colour waves): h264 at x264's default crf 23
#: 33.1 dB, vp9 at SaveWEBM's default crf 32 33.5 dB, vp9 crf 20 34.1 dB; 4:2:0 chroma on the square's edges caps
#: all of them near 34 dB. The floors leave 2 dB for other FFmpeg builds.
PSNR_FLOOR = {("mp4", "h264"): 31.0, ("webm", "vp9"): 31.0}


@pytest.mark.parametrize("container,codec", [("mp4", "h264"), ("webm", "vp9")])
def test_round_trip_keeps_count_size_rate_within_psnr(tmp_path, container, codec) -> None:
    frames = moving_frames()
    path = tmp_path / f"clip.{container}"
    encode_video(path, frames, 24, container=container, codec=codec, metadata={"prompt": {"3": {"x": 1}}})
    info = probe_video(path)
    assert (info.width, info.height, info.frames, info.fps) == (96, 64, 12, Fraction(24))
    images, fps, audio = decode_video(path)
    assert images.shape == frames.shape and images.dtype == torch.float32 and fps == 24 and audio is None
    assert psnr(images, frames) >= PSNR_FLOOR[(container, codec)]
    assert psnr(images, moving_frames(12)[torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0])]) < 25  # order kept
    assert json.loads({k.lower(): v for k, v in info.metadata.items()}["prompt"]) == {"3": {"x": 1}}


def test_fractional_rate_odd_size_and_determinism(tmp_path) -> None:
    frames = moving_frames(5, 33, 47)
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    encode_video(a, frames, 29.97)
    encode_video(b, frames, 29.97)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    info = probe_video(a)
    assert (info.width, info.height, info.frames) == (48, 34, 5)  # padded to even: yuv420p
    assert abs(float(info.fps) - 29.97) < 1e-3
    images, _, _ = decode_video(a)
    assert psnr(images[:, :33, :47], frames) > 25  # tiny frames, dense detail: 27.6 dB measured


def test_audio_travels_with_the_video(tmp_path) -> None:
    sound = tone(1.0)
    path = tmp_path / "with_sound.mp4"
    VideoFromComponents(moving_frames(24), 24, sound).save_to(path)
    video = VideoFromFile(path)
    assert video.info.has_audio and video.frame_count == 24
    parts = video.get_components()
    wave = parts.audio["waveform"]
    assert parts.audio["sample_rate"] == 44100 and wave.shape[:2] == (1, 2) and wave.shape[2] >= 44100
    # AAC shifts the start by its priming delay: compare the spectrum's peak, not samples
    spectrum = torch.fft.rfft(wave[0, 0, 4096:4096 + 32768]).abs()
    assert abs(int(spectrum.argmax()) * 44100 / 32768 - 440) < 3
    assert load_audio(path)["waveform"].shape == wave.shape


def test_flac_is_lossless_to_16_bits(tmp_path) -> None:
    sound = tone(0.25, 48000, channels=1)
    path = tmp_path / "tone.flac"
    save_audio(path, sound, "flac", metadata={"prompt": {"1": {}}})
    back = load_audio(path)
    assert back["sample_rate"] == 48000 and back["waveform"].shape == sound["waveform"].shape
    assert float((back["waveform"] - sound["waveform"]).abs().max()) <= 1 / 32768 + 1e-7


def test_bad_arguments_name_the_fix(tmp_path) -> None:
    frames = moving_frames(2)
    with pytest.raises(MediaError, match="use h264"):
        encode_video(tmp_path / "x.mp4", frames, 24, codec="vp9")
    with pytest.raises(MediaError, match="use one of mp4, webm"):
        encode_video(tmp_path / "x.avi", frames, 24, container="avi")
    with pytest.raises(MediaError, match="N ≥ 1"):
        encode_video(tmp_path / "x.mp4", frames[:0], 24)
    with pytest.raises(MediaError, match="fps must be positive"):
        encode_video(tmp_path / "x.mp4", frames, 0)


def test_files_open_only_with_their_extensions_demuxer(tmp_path) -> None:
    """An HLS playlist is never read as one (FFmpeg's probing opens a .m3u8 with the hls demuxer, which reads the
    files or URLs it lists): its extension is refused, and under a video name it is read as that format only."""
    secret = tmp_path / "secret.mp4"
    encode_video(secret, moving_frames(3), 8)
    text = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    (tmp_path / "evil.m3u8").write_text(text)
    with pytest.raises(MediaError, match="not a video or audio file"):
        probe_video(tmp_path / "evil.m3u8")
    playlist = tmp_path / "evil.mp4"
    playlist.write_text(text)
    with pytest.raises(MediaError, match="cannot be read as mp4"):
        probe_video(playlist)
    with pytest.raises(MediaError, match="cannot be read as mp4"):
        verify_upload(playlist.read_bytes(), "evil.mp4")
    with pytest.raises(MediaError, match="not a video or audio file"):
        verify_upload(secret.read_bytes(), "clip.m3u8")
    assert verify_upload(secret.read_bytes(), "clip.mp4") in ("mp4", "mov,mp4,m4a,3gp,3g2,mj2")
    buf = io.BytesIO()
    encode_video(buf, moving_frames(3), 8, container="webm")
    assert verify_upload(buf.getvalue(), "clip.webm") in ("matroska,webm", "matroska")


def test_audio_only_file_is_not_a_video(tmp_path) -> None:
    path = tmp_path / "tone.flac"
    save_audio(path, tone(0.1), "flac")
    with pytest.raises(MediaError, match="no video stream"):
        VideoFromFile(path)
