"""Test content for the video tests: smooth moving frames (what generated clips look like) and PSNR."""

from __future__ import annotations

import math

import torch

from nodegraph.api import Float, Int, Node, Output


def moving_frames(count: int = 12, height: int = 64, width: int = 96) -> torch.Tensor:
    """IMAGE [count, H, W, 3]: drifting colour waves with a red square moving right (edges, like a rendered shape)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    frames = []
    for i in range(count):
        t = i / count
        img = torch.stack([0.5 + 0.4 * torch.sin(2 * math.pi * (x + t)), 0.2 + 0.6 * y,
                           0.5 + 0.4 * torch.cos(2 * math.pi * (y - t))], dim=-1)
        left = 4 + (i * 3) % max(1, width - 24)
        img[height // 4:height // 4 + 16, left:left + 16] = torch.tensor([0.9, 0.15, 0.1])
        frames.append(img)
    return torch.stack(frames).clamp(0, 1)


def tone(seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> dict:
    """AUDIO: a 440 Hz tone (left) and 660 Hz (right) at 0.3 amplitude."""
    t = torch.arange(int(seconds * rate)) / rate
    wave = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (440, 660)[:channels]])
    return {"waveform": wave.unsqueeze(0).float(), "sample_rate": rate}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two IMAGE batches in 0..1."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


class MovingFrames(Node):
    """Test node: ``moving_frames`` as an IMAGE batch."""

    INPUTS = {"count": Int(12, min=1, max=64), "height": Int(64, min=2, max=256), "width": Int(96, min=2, max=256),
              "seconds": Float(1.0)}
    OUTPUTS = (Output("IMAGE"), Output("AUDIO"))

    def execute(self, ctx, count: int, height: int, width: int, seconds: float):
        return (moving_frames(count, height, width), tone(seconds))
