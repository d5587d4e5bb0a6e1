"""Batch and list nodes (ComfyUI's names and inputs): split batches, join them, turn batches into lists and back."""

from __future__ import annotations

from typing import Any

from nodegraph.api import Autogrow, Int, Link, Node, Output, hookimpl, resample


class RebatchImages(Node):
    """Regroup a list of image batches into batches of ``batch_size`` (a list out: later nodes run per batch)."""

    DISPLAY_NAME = "Rebatch Images"
    CATEGORY = "image/batch"
    INPUT_IS_LIST = True
    INPUTS = {"images": Link("IMAGE"), "batch_size": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("IMAGE", is_list=True),)

    def execute(self, ctx, images: list[Any], batch_size: list[int]):
        import torch

        size = batch_size[0]
        singles = [batch[i:i + 1] for batch in images for i in range(batch.shape[0])]
        out: list[Any] = []
        for img in singles:
            if out and out[-1].shape[0] < size and out[-1].shape[1:] == img.shape[1:]:
                out[-1] = torch.cat((out[-1], img))
            else:
                out.append(img)
        return (out,)


class ImageFromBatch(Node):
    """Take ``length`` images of a batch starting at ``batch_index``."""

    CATEGORY = "image/batch"
    INPUTS = {"image": Link("IMAGE"), "batch_index": Int(0, min=0, max=4095, step=None),
              "length": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, batch_index: int, length: int):
        start = min(batch_index, image.shape[0] - 1)
        return (image[start:start + min(length, image.shape[0] - start)].clone(),)


class ImageBatch(Node):
    """Join two image batches into one (the second is resized to the first's size when they differ)."""

    DISPLAY_NAME = "Batch Images"
    CATEGORY = "image"
    INPUTS = {"image1": Link("IMAGE"), "image2": Link("IMAGE")}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image1: Any, image2: Any):
        import torch

        if image1.shape[1:3] != image2.shape[1:3]:
            image2 = resample(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear",
                              "center").movedim(1, -1)
        return (torch.cat((image1, image2.to(image1.dtype))),)


def _pick(value: Any, start: int, length: int, batch: int) -> Any:
    """Rows ``start:start+length`` of a per-item tensor; tensors with one row (shared by the batch) stay whole."""
    if getattr(value, "shape", None) is not None and value.shape[0] == batch:
        return value[start:start + length].clone()
    return value


class LatentFromBatch(Node):
    """Take ``length`` latents of a batch starting at ``batch_index`` (they keep their noise draws)."""

    DISPLAY_NAME = "Latent From Batch"
    CATEGORY = "latent/batch"
    INPUTS = {"samples": Link("LATENT"), "batch_index": Int(0, min=0, max=63, step=None),
              "length": Int(1, min=1, max=64, step=None)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, batch_index: int, length: int):
        batch = samples["samples"].shape[0]
        start = min(batch_index, batch - 1)
        length = min(length, batch - start)
        out = dict(samples)
        out["samples"] = samples["samples"][start:start + length].clone()
        if "noise_mask" in samples:
            out["noise_mask"] = _pick(samples["noise_mask"], start, length, batch)
        indices = samples.get("batch_index") or list(range(batch))
        out["batch_index"] = list(indices[start:start + length])
        return (out,)


class RepeatLatentBatch(Node):
    """Repeat a latent batch ``amount`` times (each copy gets its own noise draws)."""

    DISPLAY_NAME = "Repeat Latent Batch"
    CATEGORY = "latent/batch"
    INPUTS = {"samples": Link("LATENT"), "amount": Int(1, min=1, max=64, step=None)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict, amount: int):
        tensor = samples["samples"]
        batch = tensor.shape[0]
        out = dict(samples)
        out["samples"] = tensor.repeat((amount,) + (1,) * (tensor.dim() - 1))
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            if mask.shape[0] < batch:
                mask = mask.repeat((batch // mask.shape[0] + 1,) + (1,) * (mask.dim() - 1))[:batch]
            out["noise_mask"] = mask.repeat((amount,) + (1,) * (mask.dim() - 1))
        indices = samples.get("batch_index") or list(range(batch))
        offset = max(indices) - min(indices) + 1
        out["batch_index"] = [i + k * offset for k in range(amount) for i in indices]
        return (out,)


class SeedList(Node):
    """``count`` consecutive seeds from ``seed`` as a list: the nodes it feeds run once per seed (a seed sweep)."""

    DISPLAY_NAME = "Seed List"
    CATEGORY = "utils/list"
    INPUTS = {"seed": Int(0, min=0, max=0xFFFFFFFFFFFFFFFF), "count": Int(4, min=1, max=1024)}
    OUTPUTS = (Output("INT", name="seeds", is_list=True),)

    def execute(self, ctx, seed: int, count: int):
        return ([(seed + i) % 0x10000000000000000 for i in range(count)],)


def _latent_parts(latent: dict, offset: int) -> tuple[Any, Any, list[int]]:
    """(samples, noise mask [B, 1, H, W] (all ones when absent), batch indices) of one LATENT of a list."""
    import torch
    import torch.nn.functional as F

    samples = latent["samples"]
    b, h, w = samples.shape[0], samples.shape[-2], samples.shape[-1]
    mask = latent.get("noise_mask")
    mask = torch.ones((b, 1, h * 8, w * 8)) if mask is None else mask.reshape(-1, 1, *mask.shape[-2:]).float()
    if mask.shape[-2:] != (h * 8, w * 8):
        mask = F.interpolate(mask, size=(h * 8, w * 8), mode="bilinear")
    if mask.shape[0] < b:
        mask = mask.repeat((b - 1) // mask.shape[0] + 1, 1, 1, 1)[:b]
    indices = list(latent.get("batch_index", range(offset, offset + b)))
    return samples, mask[:b], indices


class RebatchLatents(Node):
    """Regroup a list of latent batches into batches of ``batch_size`` (latents of one size together, in order)."""

    DISPLAY_NAME = "Rebatch Latents"
    CATEGORY = "latent/batch"
    INPUT_IS_LIST = True
    INPUTS = {"latents": Link("LATENT"), "batch_size": Int(1, min=1, max=4096, step=None)}
    OUTPUTS = (Output("LATENT", is_list=True),)

    def execute(self, ctx, latents: list[dict], batch_size: list[int]):
        import torch

        size = batch_size[0]
        runs: list[list[Any]] = []  # consecutive latents of one spatial size: [samples, masks, indices]
        offset = 0
        for latent in latents:
            samples, mask, indices = _latent_parts(latent, offset)
            offset += len(indices)
            if runs and runs[-1][0].shape[-2:] == samples.shape[-2:]:
                run = runs[-1]
                run[0], run[1], run[2] = torch.cat((run[0], samples)), torch.cat((run[1], mask)), run[2] + indices
            else:
                runs.append([samples, mask, indices])
        out = []
        for samples, mask, indices in runs:
            for start in range(0, samples.shape[0], size):
                piece = {"samples": samples[start:start + size], "noise_mask": mask[start:start + size],
                         "batch_index": indices[start:start + size]}
                if piece["noise_mask"].mean() == 1.0:
                    del piece["noise_mask"]
                out.append(piece)
        return (out,)


class ReplaceVideoLatentFrames(Node):
    """Overwrite frames of a video latent [B, C, T, h, w] with the source's frames from ``index`` on."""

    CATEGORY = "latent/batch"
    INPUTS = {
        "destination": Link("LATENT", tooltip="The destination latent where frames will be replaced."),
        "source": Link("LATENT", optional=True, tooltip="The source latent providing frames to insert into the "
                       "destination latent. If not provided, the destination latent is returned unchanged."),
        "index": Int(0, min=-16384, max=16384, step=1, tooltip="The starting latent frame index in the destination "
                     "latent where the source latent frames will be placed. Negative values count from the end."),
    }
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, destination: dict, index: int, source: dict | None = None):
        import logging

        if source is None:
            return (destination,)
        dest, src = destination["samples"], source["samples"]
        if dest.dim() != 5 or src.dim() != 5:
            raise ValueError(f"ReplaceVideoLatentFrames: needs video latents [B, C, T, h, w]; got "
                             f"{tuple(dest.shape)} and {tuple(src.shape)}")
        frames = dest.shape[2]
        start = frames + index if index < 0 else index
        if start > frames or start + src.shape[2] > frames:  # as ComfyUI: warn and leave the destination
            logging.getLogger(__name__).warning(
                "ReplaceVideoLatentFrames: %d source frames do not fit in %d destination frames at index %d; the "
                "destination is returned unchanged", src.shape[2], frames, start)
            return (destination,)
        out = dest.clone()
        out[:, :, start:start + src.shape[2]] = src
        return ({**source, "samples": out},)


def batch_images(images: list[Any]) -> Any:
    """One batch of images: fewer channels padded with 1 (an opaque alpha), other sizes resized to the first's."""
    import torch

    channels = max(img.shape[-1] for img in images)
    padded = [torch.nn.functional.pad(img, (0, channels - img.shape[-1]), value=1.0) for img in images]
    first = padded[0].shape
    same = [img if img.shape[1:] == first[1:] else
            resample(img.movedim(-1, 1), first[2], first[1], "bilinear", "center").movedim(1, -1) for img in padded]
    return torch.cat([img.to(same[0].dtype) for img in same], dim=0)


def batch_masks(masks: list[Any]) -> Any:
    """One batch of masks, other sizes resized to the first's."""
    import torch

    first = masks[0].shape
    same = [m if m.shape[1:] == first[1:] else
            resample(m.unsqueeze(1), first[2], first[1], "bilinear", "center").squeeze(1) for m in masks]
    return torch.cat([m.to(same[0].dtype) for m in same], dim=0)


def batch_latents(latents: list[dict[str, Any]]) -> dict[str, Any]:
    """One latent batch (others resized to the first's size), keeping each item's noise index."""
    import torch

    first = latents[0]["samples"]
    out = dict(latents[0])
    out["batch_index"] = [i for lat in latents for i in lat.get("batch_index", range(lat["samples"].shape[0]))]
    parts = [s if (s := lat["samples"]).shape[1:] == first.shape[1:] else
             resample(s, first.shape[-1], first.shape[-2], "bilinear", "center") for lat in latents]
    out["samples"] = torch.cat([p.to(first.dtype) for p in parts], dim=0)
    return out


class BatchImagesNode(Node):
    """Join any number of images into one batch (connect more as the node grows; later ones are resized to the
    first's size)."""

    DISPLAY_NAME = "Batch Images"
    CATEGORY = "image"
    INPUTS = {"images": Autogrow(Link("IMAGE"), prefix="image", min=2, max=50)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, images: dict[str, Any]):
        return (batch_images(list(images.values())),)


class BatchMasksNode(Node):
    """Join any number of masks into one batch (later ones resized to the first's size)."""

    DISPLAY_NAME = "Batch Masks"
    CATEGORY = "mask"
    INPUTS = {"masks": Autogrow(Link("MASK"), prefix="mask", min=2, max=50)}
    OUTPUTS = (Output("MASK"),)

    def execute(self, ctx, masks: dict[str, Any]):
        return (batch_masks(list(masks.values())),)


class BatchLatentsNode(Node):
    """Join any number of latents into one batch (later ones resized to the first's size)."""

    DISPLAY_NAME = "Batch Latents"
    CATEGORY = "latent"
    INPUTS = {"latents": Autogrow(Link("LATENT"), prefix="latent", min=2, max=50)}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, latents: dict[str, Any]):
        return (batch_latents(list(latents.values())),)


@hookimpl
def nodegraph_nodes():
    """The batch and list nodes."""
    return [RebatchImages, ImageFromBatch, ImageBatch, LatentFromBatch, RepeatLatentBatch, SeedList, RebatchLatents,
            ReplaceVideoLatentFrames, BatchImagesNode, BatchMasksNode, BatchLatentsNode]
