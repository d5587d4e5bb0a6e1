"""The editor's UI format converts to the API format with the catalogue."""

from __future__ import annotations

import pytest

from nodegraph.ui_format import ui_to_api
from nodegraph.workflow import WorkflowFormatError


def node(id, type, widgets=(), inputs=(), outputs=(), mode=0, title=None):
    n = {"id": id, "type": type, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": id, "mode": mode,
         "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {},
         "widgets_values": list(widgets)}
    if title:
        n["title"] = title
    return n


UI = {
    "last_node_id": 9, "last_link_id": 9, "version": 0.4, "groups": [], "config": {}, "extra": {},
    "nodes": [
        node(1, "SeedPlus", [41, "randomize", 1], outputs=[{"name": "INT", "type": "INT", "links": [1]}]),
        node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
             outputs=[{"name": "", "type": "INT", "links": [2]}]),
        # A widget converted to an input, fed by a PrimitiveNode; another input fed through the reroute.
        node(3, "IntMath", [0, 5, "add"], title="sum",
             inputs=[{"name": "a", "type": "INT", "link": 2, "widget": {"name": "a"}},
                     {"name": "b", "type": "INT", "link": 3, "widget": {"name": "b"}}],
             outputs=[{"name": "INT", "type": "INT", "links": [4]}]),
        node(4, "PrimitiveNode", [100, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [3],
                                                           "widget": {"name": "b"}}]),
        # Bypassed: its consumer gets its input instead.
        node(5, "AddOne", mode=4, inputs=[{"name": "x", "type": "INT", "link": 4}],
             outputs=[{"name": "INT", "type": "INT", "links": [5]}]),
        node(6, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 5}]),
        # Muted branch: never runs.
        node(7, "RandomInt", [0, 10], mode=2, outputs=[{"name": "INT", "type": "INT", "links": [6]}]),
        node(8, "ShowValue", mode=2, inputs=[{"name": "value", "type": "*", "link": 6}]),
        node(9, "Note", ["just a note"]),
    ],
    "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 4, 0, 3, 1, "INT"], [4, 3, 0, 5, 0, "INT"],
              [5, 5, 0, 6, 0, "INT"], [6, 7, 0, 8, 0, "INT"]],
}


def test_ui_to_api(engine):
    api = ui_to_api(UI, engine.registry)
    assert api == {
        "1": {"class_type": "SeedPlus", "inputs": {"seed": 41, "offset": 1}},
        "3": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 100, "operation": "add"},
              "_meta": {"title": "sum"}},
        "6": {"class_type": "ShowValue", "inputs": {"value": ["3", 0]}},
    }
    result = engine.run(engine.prepare(UI))  # the engine converts UI format itself
    assert result.outputs == {"6": {"text": ["142"]}}


def test_muted_upstream_leaves_input_missing(engine):
    ui = {"nodes": [node(1, "PrimitiveInt", [3], mode=2, outputs=[{"name": "INT", "type": "INT", "links": [1]}]),
                    node(2, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 1}])],
          "links": [[1, 1, 0, 2, 0, "INT"]]}
    assert ui_to_api(ui, engine.registry) == {"2": {"class_type": "ShowValue", "inputs": {}}}


def test_nothing_runnable(engine):
    with pytest.raises(WorkflowFormatError, match="no runnable nodes"):
        ui_to_api({"nodes": [node(1, "Note", ["x"])], "links": []}, engine.registry)


def out(type_, links):
    return {"name": type_, "type": type_, "links": list(links)}


def test_control_slot_follows_a_seed_whatever_its_saved_type(engine):
    for control in (True, False, None, "fixed", 0):
        ui = {"nodes": [node(1, "SeedPlus", [41, control, 3], outputs=[out("INT", [1])]),
                        node(2, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 1}])],
              "links": [[1, 1, 0, 2, 0, "INT"]]}
        assert ui_to_api(ui, engine.registry)["1"]["inputs"] == {"seed": 41, "offset": 3}, control


def test_missing_widget_values_take_defaults(engine):
    saved = node(1, "IntMath", outputs=[out("INT", [1])])
    del saved["widgets_values"]  # saved before the node had widgets, or by a template without them
    ui = {"nodes": [saved, node(2, "SeedPlus", [9], outputs=[out("INT", [])]),
                    node(3, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 1}])],
          "links": [[1, 1, 0, 3, 0, "INT"]]}
    api = ui_to_api(ui, engine.registry)
    assert api["1"]["inputs"] == {"a": 0, "b": 0, "operation": "add"}
    assert api["2"]["inputs"] == {"seed": 9, "offset": 0}
    assert engine.run(engine.prepare(ui)).outputs == {"3": {"text": ["0"]}}


def test_widget_inputs_of_the_newer_form_and_upload_values(engine):
    ui = {"nodes": [node(1, "IntMath", [2, 3, "multiply"], outputs=[out("INT", [1])],
                         inputs=[{"name": "a", "type": "INT", "widget": {"name": "a"}, "link": None},
                                 {"name": "b", "type": "INT", "widget": {"name": "b"}, "link": None}]),
                    node(2, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 1}]),
                    node(3, "LoadImage", ["cat.png", "image"], outputs=[out("IMAGE", []), out("MASK", [])])],
          "links": [[1, 1, 0, 2, 0, "INT"]]}
    api = ui_to_api(ui, engine.registry)
    assert api["1"]["inputs"] == {"a": 2, "b": 3, "operation": "multiply"}
    assert api["3"]["inputs"] == {"image": "cat.png"}  # the editor's upload value is not an input


def test_primitive_string_is_a_backend_node(engine):
    ui = {"nodes": [node(17, "PrimitiveString", ["hello"], outputs=[out("STRING", [1])]),
                    node(18, "StringConcatenate", ["ignored", " world", ""], outputs=[out("STRING", [2])],
                         inputs=[{"name": "string_a", "type": "STRING", "widget": {"name": "string_a"}, "link": 1}]),
                    node(19, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 2}])],
          "links": [[1, 17, 0, 18, 0, "STRING"], [2, 18, 0, 19, 0, "STRING"]]}
    api = ui_to_api(ui, engine.registry)
    assert api["17"] == {"class_type": "PrimitiveString", "inputs": {"value": "hello"}}
    assert api["18"]["inputs"]["string_a"] == ["17", 0]
    assert engine.run(engine.prepare(ui)).outputs == {"19": {"text": ["hello world"]}}


def test_bypassed_node_passes_the_input_of_its_output_type(engine):
    ui = {"nodes": [node(1, "PrimitiveString", ["s"], outputs=[out("STRING", [1])]),
                    node(2, "Const", [7], outputs=[out("INT", [2])]),
                    node(3, "AddOne", mode=4, outputs=[out("INT", [3])],
                         inputs=[{"name": "s", "type": "STRING", "link": 1}, {"name": "x", "type": "INT", "link": 2}]),
                    node(4, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 3}])],
          "links": [[1, 1, 0, 3, 0, "STRING"], [2, 2, 0, 3, 1, "INT"], [3, 3, 0, 4, 0, "INT"]]}
    assert ui_to_api(ui, engine.registry)["4"]["inputs"] == {"value": ["2", 0]}


GROUP = {"nodes": [
    {"index": 0, "type": "SeedPlus", "widgets_values": [0, "fixed", 0], "outputs": [out("INT", [])]},
    {"index": 1, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": None}], "outputs": [out("*", [])]},
    {"index": 2, "type": "Add", "inputs": [{"name": "a", "type": "INT", "link": None},
                                           {"name": "b", "type": "INT", "link": None}], "outputs": [out("INT", [])]}],
    "links": [[None, 0, 1, 0, 9, "INT"], [0, 0, 2, 0, 1, "INT"], [1, 0, 2, 1, 1, "INT"]], "external": []}


def test_group_node_expands_from_the_files_definitions(engine):
    ui = {"nodes": [node(4, "Const", [5], outputs=[out("INT", [7])]),
                    node(5, "workflow>Pair", [10, "randomize", 2], inputs=[{"name": "INT", "type": "INT", "link": 7}],
                         outputs=[out("INT", [8])]),
                    node(6, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 8}])],
          "links": [[7, 4, 0, 5, 0, "INT"], [8, 5, 0, 6, 0, "INT"]], "extra": {"groupNodes": {"Pair": GROUP}}}
    api = ui_to_api(ui, engine.registry)
    assert api == {"4": {"class_type": "Const", "inputs": {"value": 5}},
                   "5:0": {"class_type": "SeedPlus", "inputs": {"seed": 10, "offset": 2}},
                   "5:2": {"class_type": "Add", "inputs": {"a": ["5:0", 0], "b": ["4", 0]}},
                   "6": {"class_type": "ShowValue", "inputs": {"value": ["5:2", 0]}}}
    assert engine.run(engine.prepare(ui)).outputs == {"6": {"text": ["17"]}}


def sg_link(id, origin, slot, target, target_slot, type_="INT"):
    return {"id": id, "origin_id": origin, "origin_slot": slot, "target_id": target, "target_slot": target_slot,
            "type": type_}


INNER = {"id": "b0000000-0000-4000-8000-000000000002", "name": "Seed", "nodes": [
    node(1, "SeedPlus", [0, "randomize", 1], outputs=[out("INT", [2])],
         inputs=[{"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 1}])],
    "inputs": [{"id": "i1", "name": "seed", "type": "INT", "linkIds": [1]}],
    "outputs": [{"id": "o1", "name": "INT", "type": "INT", "linkIds": [2]}],
    "links": [sg_link(1, -10, 0, 1, 0), sg_link(2, 1, 0, -20, 0)]}
OUTER = {"id": "a0000000-0000-4000-8000-000000000001", "name": "Sum", "nodes": [
    node(1, "Add", outputs=[out("INT", [3])], inputs=[{"name": "a", "type": "INT", "link": 1},
                                                     {"name": "b", "type": "INT", "link": 2}]),
    dict(node(2, INNER["id"], [30], outputs=[out("INT", [2])]), inputs=[]),
    node(3, "Reroute", inputs=[{"name": "", "type": "*", "link": 3}], outputs=[out("*", [4])])],
    "inputs": [{"id": "i2", "name": "a", "type": "INT", "linkIds": [1]}],
    "outputs": [{"id": "o2", "name": "sum", "type": "INT", "linkIds": [4]}],
    "links": [sg_link(1, -10, 0, 1, 0), sg_link(2, 2, 0, 1, 1), sg_link(3, 1, 0, 3, 0), sg_link(4, 3, 0, -20, 0)]}


def test_nested_subgraphs_flatten_with_stable_ids(engine):
    ui = {"nodes": [node(3, "Const", [4], outputs=[out("INT", [1])]),
                    node(10, OUTER["id"], inputs=[{"name": "a", "type": "INT", "link": 1}], outputs=[out("INT", [2])]),
                    node(11, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 2}])],
          "links": [sg_link(1, 3, 0, 10, 0), sg_link(2, 10, 0, 11, 0)],
          "definitions": {"subgraphs": [OUTER, INNER]}}
    api = ui_to_api(ui, engine.registry)
    assert api == {"3": {"class_type": "Const", "inputs": {"value": 4}},
                   "10:1": {"class_type": "Add", "inputs": {"a": ["3", 0], "b": ["10:2:1", 0]}},
                   "10:2:1": {"class_type": "SeedPlus", "inputs": {"seed": 30, "offset": 1}},
                   "11": {"class_type": "ShowValue", "inputs": {"value": ["10:1", 0]}}}
    assert engine.run(engine.prepare(ui)).outputs == {"11": {"text": ["35"]}}


def test_bypassed_subgraph_passes_through(engine):
    ui = {"nodes": [node(3, "Const", [4], outputs=[out("INT", [1])]),
                    node(10, OUTER["id"], mode=4, inputs=[{"name": "a", "type": "INT", "link": 1}],
                         outputs=[out("INT", [2])]),
                    node(11, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 2}])],
          "links": [sg_link(1, 3, 0, 10, 0), sg_link(2, 10, 0, 11, 0)],
          "definitions": {"subgraphs": [OUTER, INNER]}}
    assert ui_to_api(ui, engine.registry)["11"]["inputs"] == {"value": ["3", 0]}


def seed_instance(widgets, properties=None):
    ui = {"nodes": [dict(node(10, INNER["id"], widgets, outputs=[out("INT", [2])]), properties=properties or {}),
                    node(11, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 2}])],
          "links": [sg_link(2, 10, 0, 11, 0)], "definitions": {"subgraphs": [INNER]}}
    return ui


def test_subgraph_widget_values_promoted_and_unbound(engine):
    # Older instances: the subgraph's widget inputs take the instance's widgets_values in slot order.
    assert ui_to_api(seed_instance([12]), engine.registry)["10:1"]["inputs"] == {"seed": 12, "offset": 1}
    # Nothing feeds the input: the inner widget keeps its own value.
    assert ui_to_api(seed_instance([]), engine.registry)["10:1"]["inputs"] == {"seed": 0, "offset": 1}
    # Newer instances promote widgets by [inner id, widget] pairs ("-1": the subgraph's own input).
    promoted = seed_instance([50, 7], {"proxyWidgets": [["-1", "seed"], ["1", "offset"]]})
    assert ui_to_api(promoted, engine.registry)["10:1"]["inputs"] == {"seed": 50, "offset": 7}
    assert engine.run(engine.prepare(promoted)).outputs == {"11": {"text": ["57"]}}


def test_malformed_group_and_subgraph_definitions_are_clear_errors(engine):
    selfish = {"id": "c0000000-0000-4000-8000-000000000003", "nodes": [node(1, "c0000000-0000-4000-8000-000000000003")],
               "links": [], "inputs": [], "outputs": []}
    ui = {"nodes": [node(1, selfish["id"])], "links": [], "definitions": {"subgraphs": [selfish]}}
    with pytest.raises(WorkflowFormatError, match="nest deeper"):
        ui_to_api(ui, engine.registry)
    wide = {"id": "d0000000-0000-4000-8000-000000000004", "links": [], "inputs": [], "outputs": [],
            "nodes": [node(i, "d0000000-0000-4000-8000-000000000005") for i in range(1, 40)]}
    leaf = {"id": "d0000000-0000-4000-8000-000000000005", "links": [], "inputs": [], "outputs": [],
            "nodes": [node(i, "d0000000-0000-4000-8000-000000000006") for i in range(1, 40)]}
    leaves = {"id": "d0000000-0000-4000-8000-000000000006", "links": [], "inputs": [], "outputs": [],
              "nodes": [node(i, "IntMath") for i in range(1, 100)]}
    ui = {"nodes": [node(1, wide["id"])], "links": [], "definitions": {"subgraphs": [wide, leaf, leaves]}}
    with pytest.raises(WorkflowFormatError, match="expand to more than"):
        ui_to_api(ui, engine.registry)
    broken = {"nodes": [node(1, "workflow>G")], "links": [], "extra": {"groupNodes": {"G": {"nodes": [1], "links": [[0]]}}}}
    with pytest.raises(WorkflowFormatError, match="malformed"):
        ui_to_api(broken, engine.registry)


def test_upload_value_follows_the_required_widgets(engine):
    """The editor appends the upload widget after every required input (LoadImageMask: image, channel, upload)."""
    from nodegraph.ui_export import api_to_ui

    api = {"1": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}}
    ui = {"nodes": [node(1, "LoadImageMask", ["mask.png", "red", "image"], outputs=[out("MASK", [])])], "links": []}
    assert ui_to_api(ui, engine.registry) == api
    exported = api_to_ui(api, engine.registry)
    assert exported["nodes"][0]["widgets_values"][:2] == ["mask.png", "red"]
    assert ui_to_api(exported, engine.registry) == api


def test_primitive_node_value_flows_through_reroute_chains(engine):
    ui = {"nodes": [node(1, "PrimitiveNode", [9, "fixed"], outputs=[out("INT", [1])]),
                    node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[out("*", [2])]),
                    node(3, "Reroute", inputs=[{"name": "", "type": "*", "link": 2}], outputs=[out("*", [3, 4])]),
                    node(4, "IntMath", [0, 0, "add"], outputs=[out("INT", [])],
                         inputs=[{"name": "a", "type": "INT", "widget": {"name": "a"}, "link": 3},
                                 {"name": "b", "type": "INT", "widget": {"name": "b"}, "link": 4}])],
          "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "INT"], [4, 3, 0, 4, 1, "INT"]]}
    assert ui_to_api(ui, engine.registry) == {"4": {"class_type": "IntMath",
                                                    "inputs": {"a": 9, "b": 9, "operation": "add"}}}


def test_primitive_int_has_comfyuis_control_slot(engine):
    """PrimitiveInt carries control_after_generate as ComfyUI's does: its saved widgets are [value, control]."""
    entry = engine.registry.catalogue_entry("PrimitiveInt")
    assert entry["input"]["required"]["value"][1]["control_after_generate"] is True
    ui = {"nodes": [node(1, "PrimitiveInt", [12, "increment"], outputs=[out("INT", [1])]),
                    node(2, "ShowValue", inputs=[{"name": "value", "type": "*", "link": 1}])],
          "links": [[1, 1, 0, 2, 0, "INT"]]}
    assert ui_to_api(ui, engine.registry)["1"]["inputs"] == {"value": 12}
    assert engine.run(engine.prepare(ui)).outputs == {"2": {"text": ["12"]}}
