"""The log-mel spectrogram LTX-2's audio VAE encodes (LTXVAudioVAEEncode), made as ComfyUI makes it.

The waveform is resampled to the VAE's rate (16 kHz; scipy's polyphase resampler, ComfyUI uses torchaudio's),
centred and limited to a 0.5 peak, then: magnitude STFT (Hann window of ``n_fft``, hop 160, centred with reflection
padding) → Slaney-scale mel filters with Slaney area normalisation (``n_mels`` from 0 Hz to Nyquist) →
``log(max(mel, 1e-5))``, laid out [B, channels, frames, mel bins].
"""

from __future__ import annotations

import math
from typing import Any

N_FFT = 1024
_F_SP = 200.0 / 3.0  # Slaney scale: linear below 1 kHz (15 mels), logarithmic above
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(freq: Any) -> Any:
    """Slaney mels of frequencies in Hz (a tensor)."""
    import torch

    linear = freq / _F_SP
    return torch.where(freq >= _MIN_LOG_HZ, _MIN_LOG_MEL + torch.log(freq.clamp(min=1e-10) / _MIN_LOG_HZ) / _LOG_STEP,
                       linear)


def mel_to_hz(mels: Any) -> Any:
    """Frequencies in Hz of Slaney mels (a tensor)."""
    import torch

    return torch.where(mels >= _MIN_LOG_MEL, _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mels - _MIN_LOG_MEL)),
                       _F_SP * mels)


def mel_filters(n_freqs: int, n_mels: int, sample_rate: int) -> Any:
    """Triangular Slaney mel filters [n_freqs, n_mels] from 0 Hz to Nyquist, each of unit area (Slaney norm)."""
    import torch

    freqs = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float64)
    top = hz_to_mel(torch.tensor(sample_rate / 2.0, dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    widths = edges[1:] - edges[:-1]
    slopes = edges.unsqueeze(0) - freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (filters * (2.0 / (edges[2:] - edges[:-2])).unsqueeze(0)).float()


def resample(waveform: Any, rate: int, target: int) -> Any:
    """``waveform`` [..., T] at ``rate`` resampled to ``target`` Hz (scipy's polyphase filter)."""
    import torch
    from scipy.signal import resample_poly

    if rate == target:
        return waveform
    g = math.gcd(int(rate), int(target))
    out = resample_poly(waveform.double().cpu().numpy(), target // g, rate // g, axis=-1)
    return torch.from_numpy(out.astype("float32"))


def log_mel(waveform: Any, rate: int, target_rate: int, n_mels: int, hop: int, n_fft: int = N_FFT) -> Any:
    """ComfyUI's LTX-2 log-mel spectrogram [B, C, frames, n_mels] of a waveform [B, C, T] at ``rate``."""
    import torch

    wave = resample(waveform.float(), rate, target_rate)
    wave = wave - wave.mean(dim=2, keepdim=True)
    peak = wave.abs().max() + 1e-5
    wave = wave * (peak.clamp(max=0.5) / peak)
    b, c, t = wave.shape
    spec = torch.stft(wave.reshape(b * c, t), n_fft, hop_length=hop, win_length=n_fft,
                      window=torch.hann_window(n_fft), center=True, pad_mode="reflect", return_complex=True).abs()
    mel = torch.matmul(spec.transpose(1, 2), mel_filters(spec.shape[1], n_mels, target_rate))  # [B·C, frames, mels]
    return torch.log(mel.clamp(min=1e-5)).reshape(b, c, mel.shape[1], n_mels)


__all__ = ["N_FFT", "hz_to_mel", "log_mel", "mel_filters", "mel_to_hz", "resample"]
