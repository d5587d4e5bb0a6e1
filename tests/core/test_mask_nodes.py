"""Mask nodes (nodes/masks.py) on tiny tensors, with values worked out by hand from ComfyUI's definitions."""

from __future__ import annotations

import pytest
import torch

from nodegraph.nodes import masks as m


def run(cls, **inputs):
    """The single output of one node run without an engine."""
    (out,) = cls().execute(None, **inputs)
    return out


def test_solid_and_invert() -> None:
    solid = run(m.SolidMask, value=0.25, width=3, height=2)
    assert solid.shape == (1, 2, 3) and torch.all(solid == 0.25)
    assert torch.all(run(m.InvertMask, mask=solid) == 0.75)


def test_crop_takes_rows_then_columns() -> None:
    mask = torch.arange(16.0).reshape(4, 4)
    assert run(m.CropMask, mask=mask, x=1, y=2, width=2, height=5).tolist() == [[[9.0, 10.0], [13.0, 14.0]]]


@pytest.mark.parametrize("op,expected", [("multiply", 0.25), ("add", 1.0), ("subtract", 0.0), ("and", 1.0),
                                         ("or", 1.0), ("xor", 0.0)])
def test_composite_operations(op: str, expected: float) -> None:
    dest = torch.full((1, 3, 3), 0.5)
    src = torch.full((1, 2, 2), 0.5) if op in ("multiply", "subtract") else torch.full((1, 2, 2), 0.75)
    out = run(m.MaskComposite, destination=dest, source=src, x=2, y=1, operation=op)
    # only the overlap (rows 1..2, column 2) changes; logic ops round first: 0.5 → 0 (half to even), 0.75 → 1
    if op in ("and", "or", "xor"):
        expected = {"and": 0.0, "or": 1.0, "xor": 1.0}[op]
    assert out[0, 1:, 2].tolist() == [expected, expected]
    assert out[0, 0].tolist() == [0.5, 0.5, 0.5] and out[0, 1:, :2].eq(0.5).all()
    assert out.max() <= 1.0 and out.min() >= 0.0


def test_feather_ramps_like_comfyui() -> None:
    out = run(m.FeatherMask, mask=torch.ones(1, 1, 4), left=2, top=0, right=0, bottom=0)
    assert out.tolist() == [[[0.5, 1.0, 1.0, 1.0]]]
    # right=2 hits column 0 (index -0) with 1/2 and column -1 with 2/2: ComfyUI's indexing kept
    out = run(m.FeatherMask, mask=torch.ones(1, 1, 4), left=0, top=0, right=2, bottom=0)
    assert out.tolist() == [[[0.5, 1.0, 1.0, 1.0]]]


def test_grow_and_shrink() -> None:
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1.0
    cross = run(m.GrowMask, mask=dot, expand=1, tapered_corners=True)
    assert cross.sum() == 5 and cross[0, 1, 1] == 0 and cross[0, 1, 2] == 1
    square = run(m.GrowMask, mask=dot, expand=1, tapered_corners=False)
    assert square.sum() == 9
    assert run(m.GrowMask, mask=square, expand=-1, tapered_corners=False).sum() == 1
    assert torch.equal(run(m.GrowMask, mask=dot, expand=0, tapered_corners=True), dot)
    assert run(m.GrowMask, mask=dot, expand=16384, tapered_corners=True).eq(1).all()  # stops once stable
    assert run(m.GrowMask, mask=dot, expand=-16384, tapered_corners=True).eq(0).all()


def test_threshold_image_to_mask_and_back() -> None:
    assert run(m.ThresholdMask, mask=torch.tensor([[0.2, 0.5, 0.7]]), value=0.5).tolist() == [[0.0, 0.0, 1.0]]
    image = torch.tensor([[[[0.125, 0.25, 0.375], [0.5, 0.5, 0.75]]]])
    assert run(m.ImageToMask, image=image, channel="green").tolist() == [[[0.25, 0.5]]]
    with pytest.raises(ValueError, match="alpha"):
        run(m.ImageToMask, image=image, channel="alpha")
    back = run(m.MaskToImage, mask=torch.tensor([[0.25, 1.0]]))
    assert back.shape == (1, 1, 2, 3) and back[0, 0, 0].tolist() == [0.25] * 3


def test_color_to_mask_is_255_where_equal() -> None:
    image = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])
    assert run(m.ImageColorToMask, image=image, color=0xFF0000).tolist() == [[[255.0, 0.0]]]


def test_mask_graph_runs_in_the_engine(config) -> None:
    """The packs load from BUILTIN_PACKS and a mask → image → alpha graph validates and runs end to end."""
    from PIL import Image

    from nodegraph.testing import build_engine, build_registry, run_graph

    registry = build_registry(builtins=("nodes.image_io", "nodes.masks", "nodes.compositing"))
    engine = build_engine(config, registry)
    prompt = {
        "1": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 8, "height": 4}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 0], "expand": 1, "tapered_corners": True}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["3", 0], "alpha": ["1", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "mask"}},
    }
    result = run_graph(engine, prompt)
    (saved,) = result.outputs["5"]["images"]
    with Image.open(config.outputs_dir / saved["subfolder"] / saved["filename"]) as img:
        assert img.mode == "RGBA" and img.size == (8, 4)
        r, g, b, a = img.getpixel((0, 0))
        assert r == g == b == a and a in (127, 128)  # grey 0.5 and alpha 1 - 0.5
