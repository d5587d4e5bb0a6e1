"""Dynamic inputs (ComfyUI v3 Autogrow / DynamicCombo): declarations, /object_info, validation of the grown and
selected inputs, the nested values ``execute`` gets, and the editor format's saved values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph.dynamic_inputs import Autogrow, DynamicCombo, expand, nest
from nodegraph.inputs import Combo, Float, Int, Link, Output
from nodegraph.node import Node
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.ui_format import ui_to_api
from nodegraph.validation import ValidationReport

DATA = Path(__file__).with_name("dynamic_inputs_data")
FIXTURES = Path(__file__).parents[1] / "compat" / "comfyui_object_info"


class Gather(Node):
    """Test node: reports what execute received for an Autogrow of INTs and a DynamicCombo."""

    INPUTS = {"numbers": Autogrow(Int(1), prefix="n", min=1, max=3),
              "mode": DynamicCombo({"add": {"offset": Int(0, min=-5, max=5)},
                                    "scale": {"factor": Float(1.0, min=0.0, max=4.0), "how": Combo(["up", "down"])}})}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, numbers: dict[str, Any], mode: dict[str, Any]):
        return (json.dumps({"numbers": numbers, "mode": mode}, sort_keys=True),)


@pytest.fixture
def engine(nodegraph_config):
    """An engine with the built-in packs, Capture and Gather."""
    return capture_engine(nodegraph_config, (Gather,))


def errors_of(engine, prompt: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation errors of ``prompt`` (failing when it validates)."""
    with pytest.raises(ValidationReport) as info:
        engine.prepare(prompt)
    return [e for entry in info.value.node_errors.values() for e in entry["errors"]]


def ints(*values: int) -> dict[str, Any]:
    """PrimitiveInt nodes i0, i1, … holding ``values``."""
    return {f"i{k}": {"class_type": "PrimitiveInt", "inputs": {"value": v}} for k, v in enumerate(values)}


def test_declarations_give_comfyuis_object_info(engine) -> None:
    """Batch and resize nodes' entries equal ComfyUI v0.8.0's fixtures, nested inputs included, key for key."""
    for name in ("BatchImagesNode", "BatchMasksNode", "BatchLatentsNode", "ResizeImageMaskNode"):
        ours = engine.registry.catalogue_entry(name)
        theirs = json.loads((FIXTURES / f"{name}.json").read_text())
        dynamic = {k: v for k, v in theirs["input"]["required"].items() if v[0].startswith("COMFY_")}
        assert dynamic and {k: ours["input"]["required"][k] for k in dynamic} == dynamic
        assert ours["output"] == theirs["output"] and ours["output_name"] == theirs["output_name"]
    entry = engine.registry.catalogue_entry("Gather")["input"]["required"]
    # a widget template becomes a socket (ComfyUI forces forceInput on it)
    assert entry["numbers"] == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {"n": ["INT", {"default": 1, "step": 1, "forceInput": True}]}},
        "prefix": "n", "min": 1, "max": 3}}]
    assert entry["mode"][1]["options"][1]["inputs"]["required"]["how"] == \
        ["COMBO", {"multiselect": False, "options": ["up", "down"]}]


def test_grown_and_selected_inputs_validate_and_arrive_nested(engine) -> None:
    prompt = {**ints(7, 9),
              "g": {"class_type": "Gather", "inputs": {"numbers.n0": ["i0", 0], "numbers.n2": ["i1", 0],
                                                       "mode": "scale", "mode.factor": 2, "mode.how": "down"}},
              "out": {"class_type": "Capture", "inputs": {"value": ["g", 0]}}}
    _, captured = run_captured(engine, prompt)
    assert json.loads(captured["out"]) == {"numbers": {"n0": 7, "n2": 9},
                                           "mode": {"mode": "scale", "factor": 2.0, "how": "down"}}


def test_problems_are_all_collected_and_name_the_input(engine) -> None:
    prompt = {**ints(1),
              "img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "g": {"class_type": "Gather", "inputs": {"numbers.n0": ["img", 0], "numbers.n3": ["i0", 0],
                                                       "mode": "scale", "mode.factor": 9.0}},
              "out": {"class_type": "Capture", "inputs": {"value": ["g", 0]}}}
    errs = {(e["type"], e["extra_info"].get("input_name")): e for e in errors_of(engine, prompt)}
    assert set(errs) == {("return_type_mismatch", "numbers.n0"), ("invalid_input", "numbers.n3"),
                         ("value_bigger_than_max", "mode.factor"), ("required_input_missing", "mode.how")}
    assert "numbers.n0 … numbers.n2" in errs[("invalid_input", "numbers.n3")]["message"]
    assert "expects INT" in errs[("return_type_mismatch", "numbers.n0")]["message"]


def test_missing_group_and_unknown_choice(engine) -> None:
    prompt = {"g": {"class_type": "Gather", "inputs": {"mode": "rotate"}},
              "out": {"class_type": "Capture", "inputs": {"value": ["g", 0]}}}
    errs = {(e["type"], e["extra_info"].get("input_name")): e for e in errors_of(engine, prompt)}
    assert set(errs) == {("required_input_missing", "numbers"), ("value_not_in_list", "mode")}
    assert "connect INT outputs to numbers.n0" in errs[("required_input_missing", "numbers")]["details"]
    assert "add, scale" in errs[("value_not_in_list", "mode")]["details"]
    linked = {**ints(1), "g": {"class_type": "Gather", "inputs": {"numbers.n0": ["i0", 0], "mode": ["i0", 0]}},
              "out": {"class_type": "Capture", "inputs": {"value": ["g", 0]}}}
    assert any(e["extra_info"]["input_name"] == "mode" and "cannot be linked" in e["message"]
               for e in errors_of(engine, linked))


def test_min_is_strict_only_when_asked() -> None:
    found: list[tuple[str, str]] = []
    group = Autogrow(Link("IMAGE"), prefix="image", min=2, max=4)
    expand({"images": group}, {"images.image0": ["a", 0]}, lambda kind, msg, fix, name, got: found.append((kind, name)))
    assert found == []  # as ComfyUI: the editor saves templates with fewer than min connected
    strict = Autogrow(Link("IMAGE"), prefix="image", min=2, max=4, strict_min=True)
    expand({"images": strict}, {"images.image0": ["a", 0]}, lambda kind, msg, fix, name, got: found.append((kind, name)))
    assert found == [("required_input_missing", "images")]
    assert nest({"images": group}, {"images.image1": 1, "images.image0": 0}) == {"images": {"image0": 0, "image1": 1}}
    with pytest.raises(ValueError):
        Autogrow(Link("IMAGE"), prefix="image", max=101)
    with pytest.raises(ValueError):
        DynamicCombo({"a": {}}, default="b")


def test_editor_template_nodes_convert_and_run(engine) -> None:
    """Nodes copied from official templates: widgets_values of a DynamicCombo (its option's widgets follow it),
    widgets converted to linked inputs, and grown link names convert to the API format and run."""
    ui = json.loads((DATA / "ui_batch_resize.json").read_text())
    api = ui_to_api(ui, engine.registry)
    assert api["40"]["inputs"] == {"images.image0": ["1", 0], "images.image1": ["2", 0]}
    assert api["105"]["inputs"] == {"input": ["40", 0], "resize_type": "scale dimensions",
                                    "resize_type.width": ["3", 0], "resize_type.height": ["4", 0],
                                    "resize_type.crop": "center", "scale_method": "lanczos"}
    assert api["693"]["inputs"] == {"input": ["2", 0], "resize_type": "scale total pixels",
                                    "resize_type.megapixels": 1, "scale_method": "lanczos"}
    api["693"]["inputs"]["resize_type.megapixels"] = 0.01  # keep the run small
    api["5"] = {"class_type": "Capture", "inputs": {"value": ["105", 0]}}
    api["6"] = {"class_type": "Capture", "inputs": {"value": ["693", 0]}}
    _, captured = run_captured(engine, api)
    assert tuple(captured["5"].shape) == (2, 24, 40, 3)  # the 32×32 white image was resized into the batch
    side = round(32 * (int(0.01 * 1024 * 1024) / 1024) ** 0.5)
    assert tuple(captured["6"].shape) == (1, side, side, 3)


def test_named_groups_and_constants_on_grown_inputs(engine) -> None:
    """A TemplateNames group lists its names; a grown input of a widget template also takes a constant (API
    prompts may set it) and checks it against the template's bounds."""
    named = Autogrow(Link("MASK", optional=True), names=["left", "right"], min=0)
    assert named.catalogue_entry() == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"optional": {"input": ["MASK", {}]}, "required": {}}, "names": ["left", "right"], "min": 0}}]
    found: list[str] = []
    assert list(expand({"sides": named}, {"sides.right": ["m", 0]}, lambda *a: found.append(a[3]))) == ["sides.right"]
    assert found == []
    prompt = {"g": {"class_type": "Gather", "inputs": {"numbers.n1": 4, "mode": "add", "mode.offset": -5}},
              "out": {"class_type": "Capture", "inputs": {"value": ["g", 0]}}}
    _, captured = run_captured(engine, prompt)
    assert json.loads(captured["out"]) == {"numbers": {"n1": 4}, "mode": {"mode": "add", "offset": -5}}
    prompt["g"]["inputs"]["mode.offset"] = 6
    assert [e["extra_info"]["input_name"] for e in errors_of(engine, prompt)] == ["mode.offset"]
