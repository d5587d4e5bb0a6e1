"""Tiled decoding and encoding of videos (Wan 2.1/2.2 and LTX-Video VAEs) in time and space, as ComfyUI's
``VAE.decode_tiled``/``encode_tiled`` for 3-D latents (``comfy.utils.tiled_scale_multidim``), so a long clip decodes
in memory bounded by the tile, not by the clip.

The latent ``[B, C, T, h, w]`` is cut into overlapping boxes of ``(tile_t, tile_h, tile_w)`` cells; each box is
decoded alone (its first latent frame as a video's first frame: 1 frame, then ``k`` per latent frame) and placed at
``k · t`` frames and ``s · y`` pixels; overlaps are mixed with ComfyUI's linear feather (``(i + 1) / feather`` at each
end of a box, per dimension) and normalised by the summed weights. The weights of a box are the product of one ramp
per dimension and the boxes form a grid, so the summed weights are the product of per-dimension sums: they are kept
as three vectors, and the output is the only full-size buffer (ComfyUI keeps a second one).
Encoding runs the same in reverse (pixels → latent cells, ``floor((F + k - 1) / k)`` latent frames).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

#: ``length -> length`` on one dimension (input size to output size).
SizeFn = Callable[[int], float]


def temporal_compression(vae: Any) -> int | None:
    """Frames per latent frame of a video VAE wrapper (Wan: 4, LTX-Video: 8); None for an image VAE."""
    found = getattr(vae, "temporal_compression", None)
    if found is None:  # an AutoencoderKLLTXVideo inside (its ratio is a module attribute, not a config entry)
        found = getattr(getattr(vae, "inner", None), "temporal_compression_ratio", None)
    return None if found is None else int(found)


def _ramp(length: int, feather: int) -> Any:
    """ComfyUI's per-dimension weights of one box: ``(i + 1) / feather`` over ``feather`` cells at both ends."""
    import torch

    w = torch.ones(length)
    if 0 < feather < length:
        for i in range(feather):
            a = (i + 1) / feather
            w[i] *= a
            w[length - 1 - i] *= a
    return w


def tiled_multidim(samples: Any, fn: Callable[[Any], Any], tile: Sequence[int], overlap: Sequence[int],
                   sizes: Sequence[SizeFn], positions: Sequence[SizeFn], out_channels: int) -> Any:
    """``fn`` applied box by box over the trailing dims of ``samples`` ``[B, C, *dims]``, blended (module doc).

    ``sizes[d]`` maps an input length to the output length (also the feather of an overlap), ``positions[d]`` an
    input offset to the output offset.
    """
    import torch

    dims = len(tile)
    out_shape = [round(sizes[d](samples.shape[d + 2])) for d in range(dims)]
    output = torch.empty([samples.shape[0], out_channels, *out_shape])
    for b in range(samples.shape[0]):
        s = samples[b:b + 1]
        lengths = [s.shape[d + 2] for d in range(dims)]
        if all(lengths[d] <= tile[d] for d in range(dims)):
            output[b:b + 1] = fn(s).float().cpu()
            continue
        out = output[b:b + 1].zero_()
        sums = [torch.zeros(n) for n in out_shape]
        starts = [range(0, lengths[d] - overlap[d], tile[d] - overlap[d]) if lengths[d] > tile[d] else [0]
                  for d in range(dims)]
        done: list[set[int]] = [set() for _ in range(dims)]
        for corner in itertools.product(*starts):
            box, at = s, []
            for d in range(dims):
                pos = max(0, min(lengths[d] - overlap[d], corner[d]))
                box = box.narrow(d + 2, pos, min(tile[d], lengths[d] - pos))
                at.append((pos, round(positions[d](pos))))
            piece = fn(box).float().cpu()
            target = out
            for d in range(dims):
                n = piece.shape[d + 2]
                ramp = _ramp(n, round(sizes[d](overlap[d])))
                piece.mul_(ramp.view([n if i == d + 2 else 1 for i in range(piece.dim())]))
                target = target.narrow(d + 2, at[d][1], n)
                if at[d][0] not in done[d]:  # each start adds its ramp once to that dimension's sum
                    done[d].add(at[d][0])
                    sums[d][at[d][1]:at[d][1] + n] += ramp
            target.add_(piece)
        for d in range(dims):
            out.div_(sums[d].view([out_shape[d] if i == d + 2 else 1 for i in range(out.dim())]))
    return output


def _cut(frames: int, k: int) -> int:
    """Latent frames of ``frames`` pixel frames (ComfyUI's ``floor((a + k - 1) / k)``)."""
    return max(0, math.floor((frames + k - 1) / k))


def decode_tiled(decode: Callable[[Any], Any], z: Any, k: int, spatial: int, tile_size: int, overlap: int,
                 temporal_size: int, temporal_overlap: int) -> Any:
    """Frames ``[B, 3, F, H, W]`` of video latents ``z`` ``[B, C, T, h, w]`` decoded box by box (VAEDecodeTiled's
    inputs in pixels and frames, bounded as ComfyUI bounds them); ``decode`` maps a box to its frames."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    if temporal_size < temporal_overlap * 2:
        temporal_overlap = temporal_overlap // 2
    tile_t = max(2, temporal_size // k)
    overlap_t = max(1, min(tile_t // 2, temporal_overlap // k))
    cells, over = max(1, tile_size // spatial), overlap // spatial

    def frames(a: int) -> int:
        return max(0, a * k - (k - 1))

    return tiled_multidim(z, decode, (tile_t, cells, cells), (overlap_t, over, over),
                          (frames, lambda a: a * spatial, lambda a: a * spatial),
                          (lambda p: p * k, lambda p: p * spatial, lambda p: p * spatial), out_channels=3)


def encode_tiled(encode: Callable[[Any], Any], video: Any, k: int, spatial: int, channels: int, tile_size: int,
                 overlap: int, temporal_size: int, temporal_overlap: int) -> Any:
    """Latents ``[B, C, T, h, w]`` of videos ``[B, 3, F, H, W]`` in -1..1 encoded box by box (VAEEncodeTiled's
    inputs, as ComfyUI: frames past the last whole latent frame are dropped); ``encode`` maps a box to its latent."""

    def frames(a: int) -> int:
        return max(0, a * k - (k - 1))

    tile_latent = max(2, _cut(temporal_size, k))
    tile_t = frames(tile_latent)
    overlap_t = frames(max(1, min(tile_latent // 2, _cut(temporal_overlap, k))))
    video = video[:, :, :frames(_cut(video.shape[2], k))]
    return tiled_multidim(video, encode, (tile_t, tile_size, tile_size), (overlap_t, overlap, overlap),
                          (lambda a: _cut(a, k), lambda a: a / spatial, lambda a: a / spatial),
                          (lambda p: p / k, lambda p: p / spatial, lambda p: p / spatial), out_channels=channels)


__all__ = ["decode_tiled", "encode_tiled", "temporal_compression", "tiled_multidim"]
