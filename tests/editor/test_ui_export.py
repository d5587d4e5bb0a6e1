"""API → UI export: round trips through the UI→API converter, layout, and the editor's positional widgets."""

from __future__ import annotations

import json

import pytest

from nodegraph.ui_export import api_to_ui
from nodegraph.ui_format import ui_to_api
from nodegraph.workflow import WorkflowFormatError

from .helpers import WORKFLOWS

UTILITY = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "PrimitiveInt", "inputs": {"value": 12}, "_meta": {"title": "width source"}},
    "3": {"class_type": "EmptyImage", "inputs": {"width": ["2", 0], "height": 8, "batch_size": 1, "color": 0}},
    "4": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["3", 0], "blend_factor": 0.25,
                                                 "blend_mode": "normal"}},
    "5": {"class_type": "SlowInvert", "inputs": {"image": ["4", 0], "seed": 7, "steps": 2, "step_ms": 0}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "util"},
          "_meta": {"title": "out", "version": "1.0.0"}},
}


def test_round_trip_utility_graph(registry):
    assert ui_to_api(api_to_ui(UTILITY, registry), registry) == UTILITY


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_round_trip_shipped_workflows(registry, path):
    api = json.loads(path.read_text())
    assert ui_to_api(api_to_ui(api, registry), registry) == api


def test_positional_widgets_and_converted_inputs(registry):
    ui = api_to_ui(UTILITY, registry)
    nodes = {n["id"]: n for n in ui["nodes"]}
    # The seed is followed by the editor's control_after_generate value.
    assert nodes[5]["widgets_values"] == [7, "fixed", 2, 0]
    # A widget fed by a link becomes a converted input; its widget keeps a placeholder (the default).
    assert nodes[3]["inputs"] == [{"name": "width", "type": "INT", "link": 1, "widget": {"name": "width"}}]
    assert nodes[3]["widgets_values"] == [512, 8, 1, 0]
    assert nodes[2]["title"] == "width source"
    assert nodes[6]["properties"]["nodegraph_version"] == "1.0.0"
    # Links: [id, source, slot, target, target slot, type], and each output lists its links.
    assert [1, 2, 0, 3, 0, "INT"] in ui["links"]
    assert nodes[2]["outputs"][0]["links"] == [1]
    assert ui["last_node_id"] == 6 and ui["last_link_id"] == len(ui["links"]) == 5


def test_layout_left_to_right_by_depth(registry):
    ui = api_to_ui(UTILITY, registry)
    x = {n["id"]: n["pos"][0] for n in ui["nodes"]}
    assert x[1] == x[2] < x[3] < x[4] < x[5] < x[6]
    for link in ui["links"]:  # every link goes right
        assert x[link[1]] < x[link[3]]
    same_column = [n for n in ui["nodes"] if n["pos"][0] == x[1]]
    tops = sorted((n["pos"][1], n["pos"][1] + n["size"][1]) for n in same_column)
    assert tops[0][1] <= tops[1][0]  # no overlap within a column
    orders = {n["id"]: n["order"] for n in ui["nodes"]}
    assert all(orders[link[1]] < orders[link[3]] for link in ui["links"])


def test_non_numeric_ids_and_unknown_nodes(registry):
    api = {"load": {"class_type": "NotInstalled", "inputs": {"x": 3}},
           "show": {"class_type": "ShowValue", "inputs": {"value": ["load", 0]}}}
    ui = api_to_ui(api, registry)
    ids = {n["type"]: n["id"] for n in ui["nodes"]}
    assert sorted(ids.values()) == [1, 2]
    assert ui["links"] == [[1, ids["NotInstalled"], 0, ids["ShowValue"], 0, "*"]]
    assert ui_to_api(ui, registry)[str(ids["ShowValue"])]["inputs"] == {"value": [str(ids["NotInstalled"]), 0]}


def test_errors_name_the_problem(registry):
    with pytest.raises(WorkflowFormatError, match="node 2 .*links to node 9"):
        api_to_ui({"2": {"class_type": "ShowValue", "inputs": {"value": ["9", 0]}}}, registry)
    with pytest.raises(WorkflowFormatError, match="cycle"):
        api_to_ui({"1": {"class_type": "IntMath", "inputs": {"a": ["2", 0], "b": 1, "operation": "add"}},
                   "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "operation": "add"}}}, registry)
    with pytest.raises(WorkflowFormatError):
        api_to_ui({}, registry)


def test_ui_format_passes_through(registry):
    ui = api_to_ui(UTILITY, registry)
    assert api_to_ui(ui, registry) is ui
