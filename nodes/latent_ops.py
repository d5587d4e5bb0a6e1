"""Latent tensor nodes with ComfyUI's names, inputs and numbers: composite, blend, arithmetic, rotate, flip, crop."""

from __future__ import annotations

import math
from typing import Any

from nodegraph.api import Combo, Float, Int, Link, Node, Output, hookimpl, resample

MAX_RESOLUTION = 16384
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
FLIPS = ("x-axis: vertically", "y-axis: horizontally")


def _repeat_to(tensor: Any, batch: int) -> Any:
    """Repeat (or cut) a batch to ``batch`` items."""
    if tensor.shape[0] == batch:
        return tensor
    times = math.ceil(batch / tensor.shape[0])
    return tensor.repeat((times,) + (1,) * (tensor.dim() - 1))[:batch]


def reshape_like(target: Any, latent: Any, repeat_batch: bool = True) -> Any:
    """``latent`` resized (bilinear, centre crop) to ``target``'s [C, h, w] and, optionally, its batch size."""
    if latent.shape[1:] != target.shape[1:]:
        latent = resample(latent, target.shape[-1], target.shape[-2], "bilinear", "center")
    return _repeat_to(latent, target.shape[0]) if repeat_batch else latent


def _with(latent: dict, samples: Any) -> dict:
    """A copy of a LATENT dict with new samples (other keys kept, as ComfyUI does)."""
    out = dict(latent)
    out["samples"] = samples
    return out


class LatentComposite(Node):
    """Paste ``samples_from`` into ``samples_to`` at (x, y) pixels (multiples of 8), with an optional feathered edge."""

    DISPLAY_NAME = "Latent Composite"
    CATEGORY = "latent"
    INPUTS = {"samples_to": Link("LATENT"), "samples_from": Link("LATENT"),
              "x": Int(0, min=0, max=MAX_RESOLUTION, step=8), "y": Int(0, min=0, max=MAX_RESOLUTION, step=8),
              "feather": Int(0, min=0, max=MAX_RESOLUTION, step=8)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples_to: dict, samples_from: dict, x: int, y: int, feather: int):
        import torch

        x, y, feather = x // 8, y // 8, feather // 8
        dest = samples_to["samples"]
        out = dest.clone()
        src = samples_from["samples"][:, :, :dest.shape[2] - y, :dest.shape[3] - x]
        h, w = src.shape[2], src.shape[3]
        if feather == 0:
            out[:, :, y:y + h, x:x + w] = src
        else:
            mask = torch.ones_like(src)
            for t in range(feather):
                rate = (1.0 / feather) * (t + 1)
                if y != 0:
                    mask[:, :, t:t + 1, :] *= rate
                if y + h < dest.shape[2]:
                    mask[:, :, h - 1 - t:h - t, :] *= rate
                if x != 0:
                    mask[:, :, :, t:t + 1] *= rate
                if x + w < dest.shape[3]:
                    mask[:, :, :, w - 1 - t:w - t] *= rate
            out[:, :, y:y + h, x:x + w] = src * mask + out[:, :, y:y + h, x:x + w] * (1.0 - mask)
        return (_with(samples_to, out),)


class LatentBlend(Node):
    """samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 is resized to samples1 first."""

    DISPLAY_NAME = "Latent Blend"
    CATEGORY = "_for_testing"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT"),
              "blend_factor": Float(0.5, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict, blend_factor: float):
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = resample(b, a.shape[3], a.shape[2], "bicubic", "center")
        return (_with(samples1, a * blend_factor + b * (1 - blend_factor)),)


class LatentAdd(Node):
    """samples1 + samples2 (samples2 resized and repeated to samples1's shape)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict):
        a = samples1["samples"]
        return (_with(samples1, a + reshape_like(a, samples2["samples"])),)


class LatentSubtract(Node):
    """samples1 - samples2 (samples2 resized and repeated to samples1's shape)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict):
        a = samples1["samples"]
        return (_with(samples1, a - reshape_like(a, samples2["samples"])),)


class LatentMultiply(Node):
    """samples x multiplier."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples": Link("LATENT"), "multiplier": Float(1.0, min=-10.0, max=10.0, step=0.01)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, multiplier: float):
        return (_with(samples, samples["samples"] * multiplier),)


class LatentRotate(Node):
    """Rotate latents clockwise by a quarter turn, a half turn or three quarters."""

    DISPLAY_NAME = "Rotate Latent"
    CATEGORY = "latent/transform"
    INPUTS = {"samples": Link("LATENT"), "rotation": Combo(ROTATIONS)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, rotation: str):
        import torch

        turns = ROTATIONS.index(rotation)
        return (_with(samples, torch.rot90(samples["samples"], k=turns, dims=[3, 2])),)


class LatentFlip(Node):
    """Flip latents upside down (x-axis) or left to right (y-axis)."""

    DISPLAY_NAME = "Flip Latent"
    CATEGORY = "latent/transform"
    INPUTS = {"samples": Link("LATENT"), "flip_method": Combo(FLIPS)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, flip_method: str):
        import torch

        dim = 2 if flip_method.startswith("x") else 3
        return (_with(samples, torch.flip(samples["samples"], dims=[dim])),)


class LatentCrop(Node):
    """Cut a width x height pixel rectangle at (x, y) out of latents (in steps of 8 pixels)."""

    DISPLAY_NAME = "Crop Latent"
    CATEGORY = "latent/transform"
    INPUTS = {"samples": Link("LATENT"), "width": Int(512, min=64, max=MAX_RESOLUTION, step=8),
              "height": Int(512, min=64, max=MAX_RESOLUTION, step=8),
              "x": Int(0, min=0, max=MAX_RESOLUTION, step=8), "y": Int(0, min=0, max=MAX_RESOLUTION, step=8)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, width: int, height: int, x: int, y: int):
        s = samples["samples"]
        x, y = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)
        x, y = max(x, 0), max(y, 0)
        return (_with(samples, s[:, :, y:y + height // 8, x:x + width // 8]),)


class LatentBatch(Node):
    """Join two latent batches (samples2 resized to samples1's size), keeping each item's noise index."""

    CATEGORY = "latent/batch"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict):
        import torch

        a = samples1["samples"]
        b = reshape_like(a, samples2["samples"], repeat_batch=False)
        out = _with(samples1, torch.cat((a, b.to(a.dtype)), dim=0))
        out["batch_index"] = (list(samples1.get("batch_index", range(a.shape[0])))
                              + list(samples2.get("batch_index", range(b.shape[0]))))
        return (out,)


@hookimpl
def nodegraph_nodes():
    """The latent tensor nodes."""
    return [LatentComposite, LatentBlend, LatentAdd, LatentSubtract, LatentMultiply,
            LatentRotate, LatentFlip, LatentCrop, LatentBatch]
