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
