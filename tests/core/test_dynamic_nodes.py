"""BatchImagesNode, BatchMasksNode, BatchLatentsNode, ResizeImageMaskNode and CustomCombo through a real engine,
with sizes worked out by hand from ComfyUI v0.8.0's definitions (comfy_extras/nodes_post_processing.py)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine for the module (the built-in packs plus Capture)."""
    from nodegraph.config import EngineConfig

    return capture_engine(EngineConfig(home=tmp_path_factory.mktemp("home")))


def captured(engine, nodes: dict[str, Any], **captures: list[Any]) -> dict[str, Any]:
    """Run ``nodes`` with a Capture per keyword (its link) and return the captured values."""
    prompt = dict(nodes)
    for name, link in captures.items():
        prompt[name] = {"class_type": "Capture", "inputs": {"value": link}}
    return run_captured(engine, prompt)[1]


def image(name: str, width: int, height: int, color: int, batch: int = 1) -> dict[str, Any]:
    """An EmptyImage node."""
    return {name: {"class_type": "EmptyImage",
                   "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}}}


def resize(source: list[Any], resize_type: str, method: str = "area", **values: Any) -> dict[str, Any]:
    """A ResizeImageMaskNode node's API entry."""
    inputs = {"input": source, "resize_type": resize_type, "scale_method": method}
    inputs.update({f"resize_type.{k}": v for k, v in values.items()})
    return {"class_type": "ResizeImageMaskNode", "inputs": inputs}


def test_batch_images_orders_by_name_pads_alpha_and_resizes(engine) -> None:
    nodes = {**image("a", 8, 6, 0x336699), **image("b", 4, 4, 0xFFFFFF, batch=2),
             "rgba": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["a", 0], "alpha": ["m", 0]}},
             "m": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 8, "height": 6}},
             "batch": {"class_type": "BatchImagesNode",
                       "inputs": {"images.image2": ["rgba", 0], "images.image0": ["a", 0], "images.image1": ["b", 0]}}}
    out = captured(engine, nodes, cap=["batch", 0])["cap"]
    assert tuple(out.shape) == (4, 6, 8, 4)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0x33 / 255, 0x66 / 255, 0x99 / 255, 1.0]), atol=1e-6)
    assert torch.all(out[1:3] == 1.0)  # white, resized (uniform stays uniform), alpha padded with 1
    assert torch.allclose(out[3, ..., 3], torch.ones(6, 8))  # JoinImageWithAlpha stores 1 - mask


def test_batch_masks_and_latents(engine) -> None:
    nodes = {"m0": {"class_type": "SolidMask", "inputs": {"value": 0.25, "width": 8, "height": 8}},
             "m1": {"class_type": "SolidMask", "inputs": {"value": 0.75, "width": 4, "height": 4}},
             "masks": {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": ["m0", 0], "masks.mask1": ["m1", 0]}},
             "l0": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
             "l1": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
             "lats": {"class_type": "BatchLatentsNode",
                      "inputs": {"latents.latent0": ["l0", 0], "latents.latent1": ["l1", 0]}}}
    got = captured(engine, nodes, mask=["masks", 0], lat=["lats", 0])
    assert tuple(got["mask"].shape) == (2, 8, 8)
    assert got["mask"][0].eq(0.25).all() and torch.allclose(got["mask"][1], torch.full((8, 8), 0.75))
    assert tuple(got["lat"]["samples"].shape) == (3, 4, 8, 8)
    assert got["lat"]["batch_index"] == [0, 1, 0]


@pytest.mark.parametrize("kind,values,size", [
    ("scale by multiplier", {"multiplier": 0.5}, (3, 4)),
    ("scale dimensions", {"width": 10, "height": 0, "crop": "disabled"}, (8, 10)),  # 6 * 10 / 8 = 7.5 → 8
    ("scale dimensions", {"width": 4, "height": 4, "crop": "center"}, (4, 4)),
    ("scale longer dimension", {"longer_size": 16}, (12, 16)),
    ("scale shorter dimension", {"shorter_size": 3}, (3, 4)),
    ("scale width", {"width": 4}, (3, 4)),
    ("scale height", {"height": 3}, (3, 4)),
    ("scale total pixels", {"megapixels": 0.01}, (89, 118)),  # sqrt(10485 / 48) = 14.78 → 88.67, 118.2
])
def test_resize_types_on_an_image_and_a_mask(engine, kind: str, values: dict[str, Any], size: tuple[int, int]):
    nodes = {**image("img", 8, 6, 0x808080),
             "mask": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 8, "height": 6}},
             "ri": resize(["img", 0], kind, **values), "rm": resize(["mask", 0], kind, "bilinear", **values)}
    got = captured(engine, nodes, i=["ri", 0], m=["rm", 0])
    assert tuple(got["i"].shape) == (1, *size, 3) and tuple(got["m"].shape) == (1, *size)
    assert torch.allclose(got["m"], torch.full((1, *size), 0.5))


def test_resize_shorter_side_of_a_portrait_and_match_size(engine) -> None:
    # ComfyUI v0.8.0 squared portrait inputs here (a branch that could not be reached); its later fix, as ours,
    # keeps the aspect ratio
    nodes = {**image("tall", 6, 8, 0), **image("ref", 7, 5, 0),
             "short": resize(["tall", 0], "scale shorter dimension", shorter_size=3),
             "match": resize(["tall", 0], "match size", match=["ref", 0], crop="center")}
    got = captured(engine, nodes, s=["short", 0], m=["match", 0])
    assert tuple(got["s"].shape) == (1, 4, 3, 3)
    assert tuple(got["m"].shape) == (1, 5, 7, 3)


def test_resize_checks_the_selected_inputs(engine) -> None:
    nodes = {**image("img", 8, 6, 0), "r": resize(["img", 0], "scale width", width=-1),
             "cap": {"class_type": "Capture", "inputs": {"value": ["r", 0]}}}
    with pytest.raises(ValidationReport) as info:
        engine.prepare(nodes)
    (err,) = info.value.node_errors["r"]["errors"]
    assert err["type"] == "value_smaller_than_min" and err["extra_info"]["input_name"] == "resize_type.width"


def test_custom_combo_passes_the_users_option(engine) -> None:
    nodes = {"c": {"class_type": "CustomCombo", "inputs": {"choice": "9:16"}}}
    assert captured(engine, nodes, cap=["c", 0])["cap"] == "9:16"
    with pytest.raises(ValidationReport):
        engine.prepare({**nodes, "c": {"class_type": "CustomCombo", "inputs": {"choice": 3}},
                        "cap": {"class_type": "Capture", "inputs": {"value": ["c", 0]}}})


def test_resize_dimensions_count_against_the_pixel_limit(engine) -> None:
    nodes = {**image("img", 8, 6, 0), "r": resize(["img", 0], "scale dimensions", width=16384, height=16384,
                                                   crop="disabled"),
             "cap": {"class_type": "Capture", "inputs": {"value": ["r", 0]}}}
    with pytest.raises(ValidationReport) as info:
        engine.prepare(nodes)
    (err,) = info.value.node_errors["r"]["errors"]
    assert err["type"] == "image_too_large" and err["extra_info"]["input_name"] == "resize_type.width"
