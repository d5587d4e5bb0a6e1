"""AUDIO values (ComfyUI's ``{"waveform": [B, C, T] float32, "sample_rate": int}``) to and from files with PyAV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .codecs import MediaError, open_media
from .outputs import as_text

#: Longest audio decoded from one file: one hour of 48 kHz stereo float32 (≈ 1.4 GB would be two hours).
MAX_AUDIO_SAMPLES = 48_000 * 3600
#: SaveAudio formats → (muxer, encoder).
AUDIO_FORMATS = {"flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus")}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def check_audio(audio: Any, where: str = "audio") -> tuple[Any, int]:
    """The waveform [B, C, T] and sample rate of an AUDIO value; MediaError saying what a valid one holds."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise MediaError(f"{where} must be an AUDIO value {{'waveform': [B, C, T], 'sample_rate': int}}; connect "
                         "LoadAudio or GetVideoComponents")
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    if getattr(waveform, "ndim", 0) != 3 or rate <= 0:
        raise MediaError(f"{where}: waveform must be [B, C, T] with a positive sample rate, got shape "
                         f"{tuple(getattr(waveform, 'shape', ()))} at {rate} Hz")
    return waveform, rate


def decode_audio_stream(container: Any, stream: Any) -> dict[str, Any]:
    """Decode one audio stream to an AUDIO value (batch of one, float32 planar, the stream's own rate)."""
    import av
    import numpy as np
    import torch

    if stream.codec_context is None:
        raise MediaError(f"FFmpeg has no decoder for the audio codec of {container.name!r}")
    resampler = None
    chunks: list[Any] = []
    total = 0
    rate = 0
    for frame in container.decode(stream):
        if resampler is None:
            rate = frame.sample_rate
            resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray())
            total += chunks[-1].shape[1]
        if total > MAX_AUDIO_SAMPLES:
            raise MediaError(f"the audio of {container.name!r} is longer than {MAX_AUDIO_SAMPLES} samples; trim it")
    if resampler is not None:
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    if not chunks:
        raise MediaError(f"no audio could be decoded from {container.name!r}")
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32))
    return {"waveform": waveform.unsqueeze(0), "sample_rate": int(rate)}


def load_audio(path: str | Path) -> dict[str, Any]:
    """The first audio stream of an audio or video file as an AUDIO value."""
    with open_media(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{Path(str(path)).name!r} has no audio stream")
        return decode_audio_stream(container, container.streams.audio[0])


class _PendingAudio:
    """An audio stream added to an output container, encoded once the video is (streams must exist before muxing)."""

    def __init__(self, stream: Any, waveform: Any, rate: int) -> None:
        self.stream, self.waveform, self.rate = stream, waveform, rate

    def flush(self, out: Any) -> None:
        """Encode and mux the whole waveform, then drain the encoder."""
        import av

        layout = "mono" if self.waveform.shape[0] == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(self.waveform.numpy(), format="fltp", layout=layout)
        frame.sample_rate = self.rate
        frame.pts = 0
        out.mux(self.stream.encode(frame))
        out.mux(self.stream.encode(None))


def encode_audio_stream(out: Any, audio: Mapping[str, Any], encoder: str) -> _PendingAudio:
    """Add an audio stream for ``audio`` (first of the batch, at most two channels) to an output container."""
    waveform, rate = check_audio(audio)
    wave = waveform[0, :2].detach().float().cpu().contiguous()
    if encoder == "libopus" and rate not in OPUS_RATES:
        wave, rate = _resample(wave, rate, 48000), 48000
    stream = out.add_stream(encoder, rate=rate, layout="mono" if wave.shape[0] == 1 else "stereo")
    return _PendingAudio(stream, wave, rate)


def _resample(wave: Any, rate: int, target: int) -> Any:
    """Linear-phase resampling with scipy (Opus only takes a few rates)."""
    from math import gcd

    import torch
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return torch.from_numpy(resample_poly(wave.numpy(), target // g, rate // g, axis=1).astype("float32"))


def save_audio(path: str | Path, audio: Mapping[str, Any], fmt: str = "flac", index: int = 0,
               metadata: Mapping[str, Any] | None = None, bit_rate: int | None = None) -> None:
    """Write item ``index`` of an AUDIO batch to ``path`` as flac/mp3/opus with ``metadata`` tags."""
    import av

    if fmt not in AUDIO_FORMATS:
        raise MediaError(f"audio format {fmt!r} is not supported; use one of {', '.join(AUDIO_FORMATS)}")
    waveform, rate = check_audio(audio)
    muxer, encoder = AUDIO_FORMATS[fmt]
    single = {"waveform": waveform[index:index + 1], "sample_rate": rate}
    out = av.open(str(path), mode="w", format=muxer)
    try:
        for key, value in (metadata or {}).items():
            out.metadata[key] = as_text(value)
        pending = encode_audio_stream(out, single, encoder)
        if bit_rate:
            pending.stream.bit_rate = bit_rate
        pending.flush(out)
    except av.FFmpegError as exc:
        raise MediaError(f"encoding {fmt} audio failed: {exc}") from None
    finally:
        out.close()
