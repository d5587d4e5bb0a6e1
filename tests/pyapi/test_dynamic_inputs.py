"""Dynamic inputs (Autogrow, DynamicCombo, MatchType) through the Python API: nested and dotted forms, the API
format they build, checks naming the input, and runs of BatchImagesNode and ResizeImageMaskNode on real images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from nodegraph.pyapi import Catalogue, Graph, GraphBuildError
from nodegraph.pyapi.stubs import render


def picture(width: int, height: int, seed: int) -> Image.Image:
    """A real RGB image: a gradient with noise, so resizes and batches are checked pixel for pixel."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(x + rng.integers(0, 60, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture(scope="module")
def g(shapes_engine) -> Graph:
    """A graph on the module's engine (no model is loaded: only image nodes run)."""
    return Graph(shapes_engine)


def test_nested_list_and_dotted_forms_build_the_same_api(g: Graph) -> None:
    """``images=[a, b]``, ``images={"image0": a, ...}`` and ``**{"images.image0": a}`` are one prompt; a
    DynamicCombo's nested values and its dotted ones too, with the option's defaults filled in."""
    a = g.EmptyImage(width=8, height=8)
    b = g.EmptyImage(width=8, height=8, color=255)
    forms = [g.BatchImagesNode(images=[a, b]), g.BatchImagesNode(images={"image0": a, "image1": b}),
             g.BatchImagesNode(**{"images.image0": a, "images.image1": b}),
             g.BatchImagesNode(images=a, **{"images.image1": b})]
    api = g.to_api()
    assert {str(api[f.node_id]["inputs"]) for f in forms} == {str({"images.image0": [a.node_id, 0],
                                                                  "images.image1": [b.node_id, 0]})}
    nested = g.ResizeImageMaskNode(input=a, resize_type={"resize_type": "scale dimensions", "width": 24})
    dotted = g.ResizeImageMaskNode(**{"input": a, "resize_type": "scale dimensions", "resize_type.width": 24})
    api = g.to_api()
    assert api[nested.node_id]["inputs"] == api[dotted.node_id]["inputs"] == {
        "input": [a.node_id, 0], "resize_type": "scale dimensions", "resize_type.width": 24,
        "resize_type.height": 512, "resize_type.crop": "center", "scale_method": "area"}
    first = g.ResizeImageMaskNode(input=a)  # the first option, with its defaults
    assert g.to_api()[first.node_id]["inputs"] == {"input": [a.node_id, 0], "resize_type": "scale by multiplier",
                                                    "resize_type.multiplier": 1.0, "scale_method": "area"}
    total = g.ComfyMathExpression(expression="a + c", values={"a": g.PrimitiveInt(value=2),
                                                              "c": g.PrimitiveFloat(value=0.5)})
    assert sorted(g.to_api()[total[0].node_id]["inputs"]) == ["expression", "values.a", "values.c"]


@pytest.mark.parametrize("call, expected", [
    (lambda g, a: g.BatchImagesNode(images={"picture": a}), "no input 'images.picture'; the group 'images' takes"),
    (lambda g, a: g.BatchImagesNode(), "BatchImagesNode.images needs at least 1 input"),
    (lambda g, a: g.BatchImagesNode(images=[a] * 51), "takes at most 50 inputs"),
    (lambda g, a: g.BatchImagesNode(images=[a, g.EmptyLatentImage()]), "images.image1 (node"),
    (lambda g, a: g.BatchImagesNode(images=[a], **{"images.image0": a}), "'images.image0' is given twice"),
    (lambda g, a: g.ResizeImageMaskNode(input=a, resize_type={"multiplier": 2.0}), "names its choice under"),
    (lambda g, a: g.ResizeImageMaskNode(input=a, resize_type="scale sideways"), "not among the options"),
    (lambda g, a: g.ResizeImageMaskNode(input=a, resize_type={"resize_type": "scale by multiplier", "width": 4}),
     "no input 'resize_type.width' when resize_type='scale by multiplier'; that option takes multiplier"),
    (lambda g, a: g.ResizeImageMaskNode(input=a, resize_type={"resize_type": "scale by multiplier",
                                                              "multiplier": 100.0}), "above the maximum 8.0"),
    (lambda g, a: g.ResizeImageMaskNode(input=g.EmptyLatentImage()), "expects IMAGE,MASK but got LATENT"),
])
def test_bad_dynamic_inputs_name_the_input_and_the_fix(g: Graph, call, expected: str) -> None:
    """Unknown grown names, a missing group, a missing or unknown choice, another option's input, an out-of-range
    option value and a wrong link type fail at the call."""
    with pytest.raises(GraphBuildError) as err:
        call(g, g.EmptyImage(width=8, height=8))
    assert expected in str(err.value)


def test_set_reselects_and_from_api_checks_dotted_inputs(g: Graph, shapes_engine) -> None:
    """Changing a DynamicCombo drops the old option's inputs; a dotted API prompt reads back and is checked."""
    a = g.EmptyImage(width=8, height=8)
    resize = g.ResizeImageMaskNode(input=a, resize_type={"resize_type": "scale by multiplier", "multiplier": 3.0})
    g.set(resize.node, "resize_type", {"resize_type": "scale width", "width": 32})
    assert g.to_api()[resize.node_id]["inputs"] == {"input": [a.node_id, 0], "resize_type": "scale width",
                                                     "resize_type.width": 32, "scale_method": "area"}
    g.set(resize.node, "resize_type.width", 40)
    assert g.to_api()[resize.node_id]["inputs"]["resize_type.width"] == 40
    with pytest.raises(GraphBuildError, match="resize_type.height"):
        g.set(resize.node, "resize_type.height", 40)
    again = Graph.from_api(g.to_api(), shapes_engine)
    assert again.to_api() == g.to_api()
    broken = g.to_api()
    broken[resize.node_id]["inputs"]["resize_type.width"] = -1
    with pytest.raises(GraphBuildError, match="below the minimum 0"):
        Graph.from_api(broken, shapes_engine)


def test_a_servers_catalogue_works_the_same(shapes_engine) -> None:
    """A Graph checked against ``/object_info`` JSON (what a Client uses) builds the same dotted prompt."""
    registry = shapes_engine.registry
    info = {n: registry.catalogue_entry(n, shapes_engine.config) for n in ("EmptyImage", "ResizeImageMaskNode",
                                                                             "BatchImagesNode")}
    remote = Graph(catalogue=Catalogue.from_object_info(info))
    a = remote.EmptyImage(width=8, height=8)
    batch = remote.BatchImagesNode(images=[a, a])
    remote.ResizeImageMaskNode(input=batch, resize_type={"resize_type": "scale longer dimension", "longer_size": 4})
    assert remote.to_api()["3"]["inputs"] == {"input": ["2", 0], "resize_type": "scale longer dimension",
                                              "resize_type.longer_size": 4, "scale_method": "area"}


def test_batch_and_resize_real_images(shapes_engine) -> None:
    """Two loaded pictures batched (the second resized to the first's size) and scaled ×2 with nearest-exact:
    every output pixel equals its source pixel; scaling to dimensions gives the asked size."""
    g = Graph(shapes_engine)
    first, second = picture(12, 10, 1), picture(6, 5, 2)
    a, _ = g.LoadImage(image=first)
    b, _ = g.LoadImage(image=second)
    batch = g.BatchImagesNode(images={"image0": a, "image1": b})
    double = g.ResizeImageMaskNode(input=batch, resize_type={"resize_type": "scale by multiplier", "multiplier": 2.0},
                                   scale_method="nearest-exact")
    sized = g.ResizeImageMaskNode(**{"input": a, "resize_type": "scale dimensions", "resize_type.width": 20,
                                     "resize_type.height": 16, "resize_type.crop": "disabled"})
    g.PreviewImage(images=double)
    g.PreviewImage(images=sized)
    result = g.run()
    assert result.ok
    batched = result.tensor(batch)
    assert tuple(batched.shape) == (2, 10, 12, 3)
    source = torch.from_numpy(np.array(first)).float() / 255
    assert torch.allclose(batched[0], source, atol=1 / 255)
    doubled = result.tensor(double)
    assert tuple(doubled.shape) == (2, 20, 24, 3)
    assert torch.equal(doubled, batched.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
    assert tuple(result.tensor(sized).shape) == (1, 16, 20, 3)


def test_stubs_accept_nested_and_dotted_forms(shapes_engine, tmp_path: Path) -> None:
    """The generated stub types a group as a mapping or list of its link type and a DynamicCombo as its option
    keys or a mapping, with ``**dotted`` for the API's names."""
    text = render(Catalogue.from_engine(shapes_engine))
    assert ("def BatchImagesNode(self, *, images: Mapping[str, IMAGE] | list[IMAGE] | IMAGE = ..., _id: Any = ..., "
            "_title: Any = ..., **dotted: Any)") in text
    assert "resize_type: Literal['scale by multiplier', " in text and "] | Mapping[str, Any] = ...," in text
    assert "input: IMAGE | MASK," in text


@pytest.mark.slow
def test_stub_type_checks_dynamic_calls(shapes_engine, tmp_path: Path) -> None:
    """mypy accepts the nested and dotted calls with the stub and refuses a wrong link type in a group."""
    (tmp_path / "typings").mkdir()
    (tmp_path / "typings" / "nodegraph_catalogue.pyi").write_text(render(Catalogue.from_engine(shapes_engine)))
    (tmp_path / "script.py").write_text(
        "from nodegraph import Graph\n\ng = Graph()\na = g.EmptyImage(width=8, height=8)\n"
        "batch = g.BatchImagesNode(images=[a, a])\n"
        "g.BatchImagesNode(images={'image0': a}, **{'images.image1': a})\n"
        "g.BatchImagesNode(**{'images.image0': a, 'images.image1': a})\n"
        "g.ResizeImageMaskNode(input=batch, resize_type={'resize_type': 'scale by multiplier', 'multiplier': 2.0})\n"
        "g.ResizeImageMaskNode(input=a, resize_type='scale width')\n"
        "g.BatchImagesNode(images=[g.EmptyLatentImage()])\n")
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(f"[mypy]\nmypy_path = {tmp_path / 'typings'}:{ROOT}\nfollow_imports = silent\n"
                   "ignore_missing_imports = True\n"
                   "[mypy-torch.*,diffusers.*,transformers.*,accelerate.*,safetensors.*,aiohttp.*,ray.*]\n"
                   "follow_imports = skip\n")
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir",
                          str(tmp_path / "cache"), str(tmp_path / "script.py")], check=False, capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "script.py:10:" in errors[0] and "LATENT" in errors[0], out.stdout
