"""Subgraph blueprints used as nodes in API-format workflows (``subgraph/NAME``), headless and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph.blueprints import find, global_blueprints
from nodegraph.cli import main
from nodegraph.validation import ValidationReport

ROOT = Path(__file__).resolve().parents[2]


def link(id, origin, slot, target, target_slot, type_="INT"):
    return {"id": id, "origin_id": origin, "origin_slot": slot, "target_id": target, "target_slot": target_slot,
            "type": type_}


def node(id, type, widgets=(), inputs=(), outputs=()):
    return {"id": id, "type": type, "mode": 0, "inputs": list(inputs), "outputs": list(outputs),
            "properties": {}, "widgets_values": list(widgets)}


def blueprint(sg_id, inner_nodes, links, inputs, outputs, widgets=()):
    """An editor-published blueprint: one instance of its subgraph at the root."""
    sub = {"id": sg_id, "name": sg_id, "nodes": inner_nodes, "links": links,
           "inputs": [{"id": f"i{k}", "name": n, "type": "INT", "linkIds": []} for k, n in enumerate(inputs)],
           "outputs": [{"id": f"o{k}", "name": n, "type": "INT", "linkIds": []} for k, n in enumerate(outputs)]}
    return {"nodes": [node(1, sg_id, widgets)], "links": [], "version": 0.4, "definitions": {"subgraphs": [sub]}}


#: a (link) + start (Const's widget, saved 5) → Add → AddOne; outputs: Add+1 and Add.
ADDER = blueprint(
    "aaaaaaaa-0000-4000-8000-000000000001",
    [node(1, "Const", [5], inputs=[{"name": "value", "type": "INT", "link": 2, "widget": {"name": "value"}}]),
     node(2, "Add", inputs=[{"name": "a", "type": "INT", "link": 1}, {"name": "b", "type": "INT", "link": 3}]),
     node(3, "AddOne", inputs=[{"name": "x", "type": "INT", "link": 4}])],
    [link(1, -10, 0, 2, 0), link(2, -10, 1, 1, 0), link(3, 1, 0, 2, 1), link(4, 2, 0, 3, 0),
     link(5, 3, 0, -20, 0), link(6, 2, 0, -20, 1)],
    ["a", "start"], ["plus_one", "sum"])

#: A blueprint using another by name: x → subgraph/adder → AddOne.
TWICE = blueprint(
    "bbbbbbbb-0000-4000-8000-000000000002",
    [node(1, "subgraph/adder", inputs=[{"name": "a", "type": "INT", "link": 1}]),
     node(2, "AddOne", inputs=[{"name": "x", "type": "INT", "link": 2}])],
    [link(1, -10, 0, 1, 0), link(2, 1, 0, 2, 0), link(3, 2, 0, -20, 0)],
    ["x"], ["out"])


@pytest.fixture
def home_blueprints(engine):
    folder = engine.config.home / "subgraphs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adder.json").write_text(json.dumps(ADDER))
    (folder / "twice.json").write_text(json.dumps(TWICE))
    return folder


def test_blueprint_node_expands_with_stable_ids_and_runs(engine, home_blueprints):
    api = {"1": {"class_type": "Const", "inputs": {"value": 10}},
           "2": {"class_type": "subgraph/adder", "inputs": {"a": ["1", 0]}},
           "3": {"class_type": "Sink", "inputs": {"value": ["2", 0]}},
           "4": {"class_type": "Sink", "inputs": {"value": ["2", 1]}}}
    flat = engine.to_api(api)
    assert flat == {"1": api["1"], "3": {"class_type": "Sink", "inputs": {"value": ["2:3", 0]}},
                    "4": {"class_type": "Sink", "inputs": {"value": ["2:2", 0]}},
                    "2:1": {"class_type": "Const", "inputs": {"value": 5}},
                    "2:2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2:1", 0]}},
                    "2:3": {"class_type": "AddOne", "inputs": {"x": ["2:2", 0]}}}
    assert engine.run(engine.prepare(api)).outputs == {"3": {"value": [16]}, "4": {"value": [15]}}
    # An exposed widget input given a value overrides the blueprint's saved one.
    api["2"]["inputs"]["start"] = 100
    assert engine.run(engine.prepare(api)).outputs == {"3": {"value": [111]}, "4": {"value": [110]}}


def test_blueprints_chain_and_nest(engine, home_blueprints):
    api = {"1": {"class_type": "Const", "inputs": {"value": 1}},
           "2": {"class_type": "subgraph/adder", "inputs": {"a": ["1", 0]}},
           "3": {"class_type": "subgraph/twice", "inputs": {"x": ["2", 0]}},
           "4": {"class_type": "Sink", "inputs": {"value": ["3", 0]}}}
    flat = engine.to_api(api)
    assert sorted(flat) == ["1", "2:1", "2:2", "2:3", "3:1:1", "3:1:2", "3:1:3", "3:2", "4"]
    assert flat["3:1:2"]["inputs"]["a"] == ["2:3", 0]  # the second blueprint reads the first one's output
    # 1+5+1 = 7 → adder again (7+5+1 = 13) → AddOne = 14
    assert engine.run(engine.prepare(api)).outputs == {"4": {"value": [14]}}


@pytest.mark.parametrize("name", ["nope", "../../etc/passwd", "a\\b", ""])
def test_unknown_blueprint_is_a_validation_error_naming_the_folders(engine, name):
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"7": {"class_type": f"subgraph/{name}", "inputs": {}}})
    report = info.value.to_json()
    error = report["node_errors"]["7"]["errors"][0]
    assert error["type"] == "blueprint_not_found" and repr(name) in error["message"]
    assert str(engine.config.home / "subgraphs") in error["details"]
    assert str(engine.config.user_dir / "default" / "subgraphs") in error["details"]


def test_unknown_input_and_unfed_output_are_named(engine, home_blueprints):
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"2": {"class_type": "subgraph/adder", "inputs": {"b": 1}}})
    error = info.value.to_json()["node_errors"]["2"]["errors"][0]
    assert "has no input 'b'" in error["message"] and "'a', 'start'" in error["details"]
    broken = json.loads(json.dumps(ADDER))
    broken["definitions"]["subgraphs"][0]["links"].pop()  # output 'sum' no longer fed
    (home_blueprints / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"1": {"class_type": "Const", "inputs": {"value": 1}},
                        "2": {"class_type": "subgraph/broken", "inputs": {"a": ["1", 0]}},
                        "3": {"class_type": "Sink", "inputs": {"value": ["2", 1]}}})
    assert "output 1 of blueprint node '2'" in info.value.render()
    (home_blueprints / "junk.json").write_text("{not json")
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"2": {"class_type": "subgraph/junk", "inputs": {}}})
    assert "not valid JSON" in info.value.render() and "junk.json" in info.value.render()


def test_lookup_order_and_global_listing(engine, home_blueprints):
    user = engine.config.user_dir / "default" / "subgraphs"
    user.mkdir(parents=True)
    (user / "adder.json").write_text(json.dumps(ADDER))
    assert find("adder", engine.config, engine.registry).source == "user"  # the editor's own folder wins
    listed = global_blueprints(engine.config, engine.registry)
    entries = {bp.name: bp.entry() for bp in listed.values()}
    # The editor lists its user folder itself: only home, plugin and shipped blueprints are global.
    assert entries["adder"] == {"source": "home", "name": "adder", "info": {"node_pack": "nodegraph.home"}}
    assert entries["shapes_txt2img"] == {"source": "templates", "name": "shapes_txt2img",
                                         "info": {"node_pack": "nodegraph"}}
    assert all(len(key) == 64 and key == bp.id for key, bp in listed.items())
    assert json.loads(listed[next(k for k, b in listed.items() if b.name == "twice")].entry(True)["data"]) == TWICE


def shapes(tmp_path: Path, nodes: dict) -> Path:
    path = tmp_path / f"wf{len(list(tmp_path.glob('wf*.json')))}.json"
    path.write_text(json.dumps(nodes))
    return path


def test_shipped_blueprint_runs_through_the_cli_like_the_flat_workflow(tmp_path, capsys):
    home, out = tmp_path / "home", tmp_path / "out"
    api = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
           "2": {"class_type": "subgraph/shapes_txt2img", "inputs": {"seed": ["1", 0], "text": "a green square"}},
           "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bp"}}}
    assert main(["validate", str(shapes(tmp_path, api)), "--home", str(home)]) == 0
    assert main(["run", str(shapes(tmp_path, api)), "--home", str(home), "--output-dir", str(out)]) == 0
    flat = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    flat["3"]["inputs"].update(seed=7, steps=10)
    flat["6"]["inputs"]["text"] = "a green square"
    flat["9"]["inputs"]["filename_prefix"] = "flat"
    assert main(["run", str(shapes(tmp_path, flat)), "--home", str(home), "--output-dir", str(out)]) == 0
    capsys.readouterr()
    with Image.open(next(out.glob("bp_*.png"))) as img, Image.open(next(out.glob("flat_*.png"))) as ref:
        assert img.size == (64, 64)
        prompt = json.loads(img.text["prompt"])
        assert np.array_equal(np.asarray(img), np.asarray(ref))  # the same graph, the same pixels
    assert prompt["2:3"]["class_type"] == "KSampler" and prompt["2:3"]["inputs"]["seed"] == ["1", 0]
    assert prompt["2:4"]["inputs"]["ckpt_name"] == "nodegraph-shapes-v1"  # an exposed input left at its default
    assert prompt["3"]["inputs"]["images"] == ["2:8", 0]
    # A different prompt through the exposed input changes the image.
    api["2"]["inputs"].update(text="a yellow triangle", seed=8)
    api["3"]["inputs"]["filename_prefix"] = "other"
    assert main(["run", str(shapes(tmp_path, api)), "--home", str(home), "--output-dir", str(out)]) == 0
    with Image.open(next(out.glob("other_*.png"))) as other, Image.open(next(out.glob("bp_*.png"))) as img:
        assert not np.array_equal(np.asarray(other), np.asarray(img))


def test_cli_names_an_unknown_blueprint(tmp_path, capsys):
    api = {"2": {"class_type": "subgraph/missing_one", "inputs": {}}}
    assert main(["validate", str(shapes(tmp_path, api)), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "no subgraph blueprint named 'missing_one'" in err and str(tmp_path / "home" / "subgraphs") in err


def test_plugin_package_ships_blueprints(config, tmp_path):
    from nodegraph.testing import build_engine, build_registry

    from .conftest import CORE_PACKS, testnodes

    package = tmp_path / "plug" / "bp_pack"
    (package / "subgraphs").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A plugin that ships only a blueprint."""\n')
    (package / "subgraphs" / "pack_adder.json").write_text(json.dumps(ADDER))
    engine = build_engine(config, build_registry(testnodes, tmp_path / "plug", builtins=CORE_PACKS))
    listed = {bp.name: bp.entry() for bp in global_blueprints(engine.config, engine.registry).values()}
    assert listed["pack_adder"] == {"source": "custom_node", "name": "pack_adder", "info": {"node_pack": "bp_pack"}}
    api = {"1": {"class_type": "Const", "inputs": {"value": 2}},
           "2": {"class_type": "subgraph/pack_adder", "inputs": {"a": ["1", 0], "start": 1}},
           "3": {"class_type": "Sink", "inputs": {"value": ["2", 1]}}}
    assert engine.run(engine.prepare(api)).outputs == {"3": {"value": [3]}}
