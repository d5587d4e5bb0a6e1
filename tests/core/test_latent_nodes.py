"""Latent tensor nodes (nodes/latent_ops.py, LatentCompositeMasked) on tiny tensors, values worked out by hand."""

from __future__ import annotations

import torch

from nodegraph.nodes import compositing as c
from nodegraph.nodes import latent_ops as lo


def run(cls, **inputs):
    """The single output of one node run without an engine."""
    (out,) = cls().execute(None, **inputs)
    return out


def lat(value: float, h: int = 4, w: int = 4, b: int = 1, c_: int = 1) -> dict:
    return {"samples": torch.full((b, c_, h, w), value)}


def test_composite_places_at_pixel_over_8() -> None:
    out = run(lo.LatentComposite, samples_to=lat(0.0), samples_from=lat(1.0, 2, 2), x=8, y=16, feather=0)["samples"]
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]


def test_composite_feather_ramps_inner_edges() -> None:
    out = run(lo.LatentComposite, samples_to=lat(0.0, 4, 6), samples_from=lat(1.0, 4, 2), x=16, y=0,
              feather=16)["samples"]
    # both side edges are inside the destination: rates 1/2 then 2/2 from each side, over the two columns
    assert out[0, 0, 0].tolist() == [0, 0, 0.5, 0.5, 0, 0]


def test_composite_masked() -> None:
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    dest = lat(0.0)
    out = run(c.LatentCompositeMasked, destination=dest, source=lat(1.0, 2, 2), x=8, y=8, resize_source=False,
              mask=mask)["samples"]
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert dest["samples"].eq(0).all()


def test_blend_add_subtract_multiply() -> None:
    assert run(lo.LatentBlend, samples1=lat(1.0), samples2=lat(0.0), blend_factor=0.25)["samples"].eq(0.25).all()
    assert run(lo.LatentAdd, samples1=lat(1.0), samples2=lat(0.5, b=1))["samples"].eq(1.5).all()
    sub = run(lo.LatentSubtract, samples1=lat(1.0, b=2), samples2=lat(0.25, 2, 2))["samples"]
    assert sub.shape == (2, 1, 4, 4) and sub.eq(0.75).all()  # resized and repeated to samples1
    assert run(lo.LatentMultiply, samples=lat(2.0), multiplier=-1.5)["samples"].eq(-3.0).all()


def test_rotate_and_flip() -> None:
    grid = {"samples": torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])}
    assert run(lo.LatentRotate, samples=grid, rotation="90 degrees")["samples"][0, 0].tolist() == [[3, 1], [4, 2]]
    assert run(lo.LatentRotate, samples=grid, rotation="270 degrees")["samples"][0, 0].tolist() == [[2, 4], [1, 3]]
    assert run(lo.LatentRotate, samples=grid, rotation="none")["samples"][0, 0].tolist() == [[1, 2], [3, 4]]
    assert run(lo.LatentFlip, samples=grid, flip_method="x-axis: vertically")["samples"][0, 0].tolist() == [[3, 4],
                                                                                                         [1, 2]]
    assert run(lo.LatentFlip, samples=grid, flip_method="y-axis: horizontally")["samples"][0, 0].tolist() == [
        [2, 1], [4, 3]]


def test_crop_in_cells_of_8_pixels() -> None:
    s = {"samples": torch.arange(256.0).reshape(1, 1, 16, 16), "noise_mask": torch.ones(1, 1, 16, 16)}
    out = run(lo.LatentCrop, samples=s, width=64, height=72, x=16, y=8)
    assert out["samples"].shape == (1, 1, 9, 8) and out["samples"][0, 0, 0, 0] == 16 + 2
    assert "noise_mask" in out


def test_batch_joins_and_keeps_noise_indices() -> None:
    out = run(lo.LatentBatch, samples1=lat(0.0, b=2), samples2={"samples": torch.ones(1, 1, 2, 2), "batch_index": [5]})
    assert out["samples"].shape == (3, 1, 4, 4) and out["samples"][2].eq(1).all()
    assert out["batch_index"] == [0, 1, 5]
