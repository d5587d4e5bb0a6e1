"""Latent tensor nodes with ComfyUI's names, inputs and numbers: composite, blend, arithmetic, rotate, flip, crop."""

from __future__ import annotations

import math
from typing import Any

from nodegraph.api import Combo, Float, Int, Link, Node, Output, hookimpl, model_patches, resample, with_patch

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


def _unit(t: Any) -> tuple[Any, Any]:
    """(t / |t|, |t|): per-position vectors over the channels and their lengths (0/0 read as 0)."""
    import torch

    norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    return torch.nan_to_num(t / norm), norm


class LatentInterpolate(Node):
    """Blend two latents by ratio in direction and, separately, in length per position (ratio 1: samples1)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT"),
              "ratio": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict, ratio: float):
        s1 = samples1["samples"]
        (d1, m1), (d2, m2) = _unit(s1), _unit(reshape_like(s1, samples2["samples"]))
        direction, _ = _unit(d1 * ratio + d2 * (1.0 - ratio))
        return (_with(samples1, direction * (m1 * ratio + m2 * (1.0 - ratio))),)


_AXES = {"x": 1, "y": 2, "t": 3}  # counted from the last dimension


class LatentConcat(Node):
    """Join samples2 after samples1 along x, y or t (a leading '-' puts it before)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples1": Link("LATENT"), "samples2": Link("LATENT"),
              "dim": Combo(["x", "-x", "y", "-y", "t", "-t"])}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples1: dict, samples2: dict, dim: str):
        import torch

        s1 = samples1["samples"]
        s2 = _repeat_to(samples2["samples"], s1.shape[0])
        parts = (s2, s1) if dim.startswith("-") else (s1, s2)
        axis = -_AXES[dim.lstrip("-")]
        if s1.dim() != s2.dim() or any(a != b for i, (a, b) in enumerate(zip(s1.shape, s2.shape))
                                       if i != s1.dim() + axis):
            raise ValueError(f"LatentConcat: shapes {tuple(s1.shape)} and {tuple(s2.shape)} differ outside dim "
                             f"{dim!r}; resize one latent (LatentUpscale) or concatenate along another dim")
        return (_with(samples1, torch.cat(parts, dim=axis)),)


class LatentCut(Node):
    """Keep ``amount`` entries of x, y or t from ``index`` (negative: counted from the end)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples": Link("LATENT"), "dim": Combo(["x", "y", "t"]),
              "index": Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              "amount": Int(1, min=1, max=MAX_RESOLUTION, step=1)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, dim: str, index: int, amount: int):
        s = samples["samples"]
        axis = s.dim() - _AXES[dim]
        size = s.shape[axis]
        if index >= 0:
            index = min(index, size - 1)
            amount = min(size - index, amount)
        else:
            index = max(index, -size)
            amount = min(-index, amount)
        return (_with(samples, s.narrow(axis, index, amount)),)


class LatentCutToBatch(Node):
    """Cut x, y or t into slices of slice_size and stack the slices in the batch (a remainder is dropped)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples": Link("LATENT"), "dim": Combo(["t", "x", "y"]),
              "slice_size": Int(1, min=1, max=MAX_RESOLUTION, step=1)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, dim: str, slice_size: int):
        s = samples["samples"]
        axis = s.dim() - _AXES[dim]
        if axis < 2:  # the batch or channel dimension: nothing to cut
            return (samples,)
        moved = s.movedim(axis, 1)
        size = min(slice_size, moved.shape[1])
        moved = moved[:, :moved.shape[1] // size * size]
        return (_with(samples, moved.reshape(-1, size, *moved.shape[2:]).movedim(1, axis)),)


class LatentBatchSeedBehavior(Node):
    """fixed: every latent of the batch gets the first one's noise; random: each its own (batch_index dropped)."""

    CATEGORY = "latent/advanced"
    INPUTS = {"samples": Link("LATENT"), "seed_behavior": Combo(["random", "fixed"], default="fixed")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, seed_behavior: str):
        out = dict(samples)
        if seed_behavior == "random":
            out.pop("batch_index", None)
        else:
            out["batch_index"] = [next(iter(out.get("batch_index", [0])))] * samples["samples"].shape[0]
        return (out,)


class TonemapReinhard:
    """LATENT_OPERATION: Reinhard tone mapping of the per-position channel-vector lengths, scaled to mean + 5 std."""

    def __init__(self, multiplier: float) -> None:
        self.multiplier = multiplier

    def __call__(self, latent: Any, **_: Any) -> Any:
        import torch

        length = torch.linalg.vector_norm(latent, dim=1, keepdim=True) + 1e-10
        top = (length.std(dim=(1, 2, 3), keepdim=True) * 5 + length.mean(dim=(1, 2, 3), keepdim=True)) \
            * self.multiplier
        scaled = length / top
        return latent / length * (scaled / (scaled + 1.0) * top)


class Sharpen:
    """LATENT_OPERATION: sharpen the channel directions with ComfyUI's sharpening kernel, lengths kept."""

    def __init__(self, radius: int, sigma: float, alpha: float) -> None:
        self.radius, self.sigma, self.alpha = radius, sigma, alpha

    def __call__(self, latent: Any, **_: Any) -> Any:
        import torch.nn.functional as F

        from .compositing import gaussian_kernel

        length = torch_norm(latent) + 1e-6
        unit = latent / length
        r, channels = self.radius, latent.shape[1]
        size = 2 * r + 1
        kernel = gaussian_kernel(size, self.sigma) * (self.alpha * -10)
        kernel[r, r] = kernel[r, r] - kernel.sum() + 1.0
        padded = F.pad(unit, (r, r, r, r), mode="reflect")
        sharp = F.conv2d(padded, kernel.expand(channels, 1, size, size), padding=r, groups=channels)
        return length * sharp[:, :, r:-r, r:-r]


def torch_norm(latent: Any) -> Any:
    """The per-position length of the channel vectors, [B, 1, h, w]."""
    import torch

    return torch.linalg.vector_norm(latent, dim=1, keepdim=True)


class LatentOperationTonemapReinhard(Node):
    """A latent operation: Reinhard tone mapping of the latent's magnitudes."""

    CATEGORY = "latent/advanced/operations"
    INPUTS = {"multiplier": Float(1.0, min=0.0, max=100.0, step=0.01)}
    OUTPUTS = (Output("LATENT_OPERATION"),)

    def execute(self, ctx, multiplier: float):
        return (TonemapReinhard(float(multiplier)),)


class LatentOperationSharpen(Node):
    """A latent operation: sharpen the latent (unsharp kernel of radius, sigma and strength alpha)."""

    CATEGORY = "latent/advanced/operations"
    INPUTS = {"sharpen_radius": Int(9, min=1, max=31, step=1), "sigma": Float(1.0, min=0.1, max=10.0, step=0.1),
              "alpha": Float(0.1, min=0.0, max=5.0, step=0.01)}
    OUTPUTS = (Output("LATENT_OPERATION"),)

    def execute(self, ctx, sharpen_radius: int, sigma: float, alpha: float):
        return (Sharpen(int(sharpen_radius), float(sigma), float(alpha)),)


class LatentApplyOperation(Node):
    """Apply a latent operation to a latent."""

    CATEGORY = "latent/advanced/operations"
    INPUTS = {"samples": Link("LATENT"), "operation": Link("LATENT_OPERATION")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, operation: Any):
        s = samples["samples"]
        if s.dim() != 4:
            raise ValueError(f"LatentApplyOperation: the operations work on image latents [B, C, h, w], got shape "
                             f"{tuple(s.shape)}")
        return (_with(samples, operation(latent=s)),)


class LatentApplyOperationCFG(Node):
    """Apply a latent operation to each step's guidance: to the positive prediction's difference from the negative."""

    CATEGORY = "latent/advanced/operations"
    INPUTS = {"model": Link("MODEL"), "operation": Link("LATENT_OPERATION")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model: Any, operation: Any):
        return (with_patch(model, model_patches.LatentOperationCFG(operation)),)


@hookimpl
def nodegraph_types():
    """The latent operation link type."""
    return {"LATENT_OPERATION": "a function latent → latent (LatentOperationSharpen, LatentOperationTonemapReinhard)"}


@hookimpl
def nodegraph_nodes():
    """The latent tensor nodes."""
    return [LatentComposite, LatentBlend, LatentAdd, LatentSubtract, LatentMultiply,
            LatentRotate, LatentFlip, LatentCrop, LatentBatch, LatentInterpolate, LatentConcat, LatentCut,
            LatentCutToBatch, LatentBatchSeedBehavior, LatentOperationTonemapReinhard, LatentOperationSharpen,
            LatentApplyOperation, LatentApplyOperationCFG]
