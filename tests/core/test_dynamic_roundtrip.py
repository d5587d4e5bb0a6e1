"""Dynamic inputs (Autogrow, DynamicCombo) wherever a workflow travels: API → editor → API round trips, the
editor's own layout of them (nodes copied from official templates), and node expansions that contain them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph import Int, Link, Node, NodeOutput, Output
from nodegraph.registry import Registry
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.ui_export import api_to_ui
from nodegraph.ui_format import ui_to_api

DATA = Path(__file__).with_name("dynamic_inputs_data")

SOURCES: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
    "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "5": {"class_type": "PrimitiveInt", "inputs": {"value": 24}},
    "6": {"class_type": "PrimitiveFloat", "inputs": {"value": 1.5}},
}

DYNAMIC: dict[str, Any] = {
    "10": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0],
                                                       "images.image2": ["1", 0]}},
    "11": {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": ["3", 0], "masks.mask1": ["3", 0]}},
    "12": {"class_type": "BatchLatentsNode", "inputs": {"latents.latent0": ["4", 0], "latents.latent1": ["4", 0]}},
    "13": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["10", 0], "resize_type": "scale dimensions", "resize_type.width": ["5", 0],
        "resize_type.height": 16, "resize_type.crop": "disabled", "scale_method": "bilinear"}},
    "14": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["11", 0], "resize_type": "match size", "resize_type.match": ["1", 0], "resize_type.crop": "center",
        "scale_method": "nearest-exact"}},
    "15": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["13", 0], "resize_type": "scale by multiplier", "resize_type.multiplier": 0.5,
        "scale_method": "area"}},
    "16": {"class_type": "CustomCombo", "inputs": {"choice": "my own option"}},
    "17": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a * c + 1", "values.a": ["5", 0],
                                                           "values.c": ["6", 0]}},
    "18": {"class_type": "SaveImageAdvanced", "inputs": {"images": ["15", 0], "filename_prefix": "dyn",
                                                         "format": "exr", "format.bit_depth": "32-bit float",
                                                         "format.input_color_space": "linear"}},
}


def nodes_by_id(ui: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The editor nodes of ``ui`` by id."""
    return {n["id"]: n for n in ui["nodes"]}


def test_round_trip_of_every_dynamic_node(registry: Registry) -> None:
    """API → editor → API gives back every grown and selected input, links and constants alike."""
    api = {**SOURCES, **DYNAMIC}
    assert ui_to_api(api_to_ui(api, registry), registry) == api
    for nid in DYNAMIC:  # each node alone with what feeds it (no other node's slots help it)
        alone = {k: api[k] for k in sorted(upstream(api, nid))}
        assert ui_to_api(api_to_ui(alone, registry), registry) == alone, nid


def upstream(api: dict[str, Any], nid: str) -> set[str]:
    """``nid`` and every node feeding it."""
    found, todo = set(), [nid]
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo += [v[0] for v in api[node]["inputs"].values() if isinstance(v, list)]
    return found


def test_editor_slots_and_widgets_of_dynamic_nodes(registry: Registry) -> None:
    """Grown inputs are typed slots with their links and one free slot to grow into; a combo's option widgets
    follow its value; an option's link input and its linked widgets are slots."""
    ui = api_to_ui({**SOURCES, **DYNAMIC}, registry)
    nodes = nodes_by_id(ui)
    links = {link[0]: link for link in ui["links"]}
    batch = nodes[10]["inputs"]
    assert [(s["name"], s["type"]) for s in batch] == [(f"images.image{i}", "IMAGE") for i in range(4)]
    assert [links[s["link"]][1] for s in batch[:3]] == [1, 2, 1] and batch[3]["link"] is None
    assert [links[s["link"]][4] for s in batch[:3]] == [0, 1, 2]  # target slot indexes
    math_slots = [(s["name"], s["link"] is not None) for s in nodes[17]["inputs"]]
    assert math_slots == [("values.a", True), ("values.b", False), ("values.c", True), ("values.d", False)]
    assert nodes[13]["widgets_values"] == ["scale dimensions", 512, 16, "disabled", "bilinear"]
    assert [(s["name"], s.get("widget")) for s in nodes[13]["inputs"]] == [
        ("input", None), ("resize_type.width", {"name": "resize_type.width"})]
    assert nodes[14]["widgets_values"] == ["match size", "center", "nearest-exact"]
    assert [(s["name"], s["type"]) for s in nodes[14]["inputs"]] == [("input", "IMAGE,MASK"),
                                                                     ("resize_type.match", "IMAGE,MASK")]
    assert nodes[15]["widgets_values"] == ["scale by multiplier", 0.5, "area"]
    assert nodes[18]["widgets_values"] == ["dyn", "exr", "32-bit float", "linear"]


def test_export_matches_the_editors_own_saves(registry: Registry) -> None:
    """Nodes the official editor saved (copied from ComfyUI's templates) come back from their API form with the
    same slots (names, types, converted widgets, which are linked) and the same widget values (bar placeholders
    under links)."""
    saved = json.loads((DATA / "ui_batch_resize.json").read_text())
    ours = nodes_by_id(api_to_ui(ui_to_api(saved, registry), registry))
    for node in saved["nodes"]:
        if node["type"] not in ("BatchImagesNode", "ResizeImageMaskNode"):
            continue
        mine = ours[node["id"]]

        def shape(slots: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return [(s["name"], s["type"], s.get("widget"), s.get("link") is None) for s in slots]
        assert shape(mine["inputs"]) == shape(node["inputs"]), node["id"]
        linked = {s["widget"]["name"] for s in node["inputs"] if s.get("widget") and s.get("link") is not None}
        assert len(mine["widgets_values"]) == len(node["widgets_values"]), node["id"]
        if not linked:
            assert mine["widgets_values"] == node["widgets_values"], node["id"]
        else:  # resize_type.width and .height are linked: positions 1 and 2 hold placeholders
            assert [v for i, v in enumerate(mine["widgets_values"]) if i not in (1, 2)] == \
                [v for i, v in enumerate(node["widgets_values"]) if i not in (1, 2)]


class Tile(Node):
    """Test node: expands into a batch of ``n`` copies of its image (given as values and as a link to the prompt's
    node) resized by a multiplier: a BatchImagesNode and a ResizeImageMaskNode inside the expansion."""

    INPUTS = {"image": Link("IMAGE"), "n": Int(2, min=0, max=4), "mode": Int(0, min=0, max=2)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, image: Any, n: int, mode: int):
        src, idx = ctx.prompt[ctx.node_id]["inputs"]["image"]
        grown = {f"images.image{i}": image if i % 2 else [src, idx] for i in range(n)}
        resize: dict[str, Any] = {"input": ["batch", 0], "resize_type": "scale by multiplier",
                                  "resize_type.multiplier": 2.0, "scale_method": "nearest-exact"}
        if mode == 1:
            grown["images.picture"] = [src, idx]
        if mode == 2:
            del resize["resize_type"]
        graph = {"batch": {"class_type": "BatchImagesNode", "inputs": grown},
                 "big": {"class_type": "ResizeImageMaskNode", "inputs": resize}}
        return NodeOutput((["big", 0],), expand=graph)


@pytest.fixture
def tile_engine(nodegraph_config: Any) -> Any:
    """An engine with the built-in packs, Capture and Tile (expansions resolve class types with its registry)."""
    engine = capture_engine(nodegraph_config, (Tile,))
    engine.services.put(Registry, engine.registry)
    return engine


def tile_prompt(n: int, mode: int = 0) -> dict[str, Any]:
    """EmptyImage 8×6 → Tile(n, mode) → Capture."""
    return {"img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 1, "color": 9}},
            "tile": {"class_type": "Tile", "inputs": {"image": ["img", 0], "n": n, "mode": mode}},
            "out": {"class_type": "Capture", "inputs": {"value": ["tile", 0]}}}


def test_expansion_with_grown_and_selected_inputs_runs(tile_engine: Any) -> None:
    """The expanded BatchImagesNode gets its grown inputs (values and links), the resize its chosen option's."""
    result, captured = run_captured(tile_engine, tile_prompt(3))
    result.raise_for_status()
    assert tuple(captured["out"].shape) == (3, 12, 16, 3)


@pytest.mark.parametrize("n, mode, expected", [
    (0, 0, "input group 'images' has 0 IMAGE input(s) connected"),
    (2, 1, "input 'images.picture' is not one of the group's inputs"),
    (2, 2, "required input 'resize_type' is missing"),
])
def test_bad_dynamic_inputs_in_an_expansion_name_the_input(tile_engine: Any, n: int, mode: int,
                                                           expected: str) -> None:
    """A missing group, an unknown grown name and a missing choice fail the expanding node, naming the input."""
    result, _ = run_captured(tile_engine, tile_prompt(n, mode))
    assert result.status == "error" and result.error.node_id == "tile"
    assert expected in result.error.exception_message and "expanded node" in result.error.exception_message
