"""The nodegraph command line: run, validate, nodes, plugins; exit codes; PNG workflows; the example plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from nodegraph.cli import main
from nodegraph.registry import Registry

IMAGE_WF = {
    "1": {"class_type": "ExampleCheckerboard", "inputs": {"size": 32, "squares": 4}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "board"}},
}


def write(tmp_path: Path, wf: dict, name: str = "wf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(wf))
    return path


def test_run_saves_into_output_dir_with_workflow_chunks(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", str(write(tmp_path, IMAGE_WF)), "--home", str(tmp_path / "home"), "--output-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "board_00001_.png")]
    with Image.open(printed[0]) as img:
        assert img.size == (32, 32)
        assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((8, 0)) == (0, 0, 0)  # inverted board
        assert json.loads(img.text["prompt"])["1"]["class_type"] == "ExampleCheckerboard"
    # The PNG carries its workflow: running it again works and overrides apply.
    code = main(["run", printed[0], "--home", str(tmp_path / "home"), "--output-dir", str(out),
                 "--set", "1.size=16"])
    assert code == 0
    with Image.open(capsys.readouterr().out.split()[0]) as img:
        assert img.size == (16, 16)


def test_set_overrides_and_text_outputs(tmp_path, capsys):
    wf = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
          "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "add"}},
          "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    assert main(["run", str(write(tmp_path, wf)), "--home", str(tmp_path), "--set", "2.operation=multiply",
                 "--set", "1.value=7"]) == 0
    assert capsys.readouterr().out.strip() == "3: 21"
    assert main(["run", str(write(tmp_path, wf)), "--home", str(tmp_path), "--set", "9.value=1"]) == 2
    assert "no node '9'" in capsys.readouterr().err


def test_exit_codes_in_a_subprocess(tmp_path):
    bad = write(tmp_path, {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": "x", "operation": "add"}},
                           "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}, "bad.json")
    failing = write(tmp_path, {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "operation": "modulo"}},
                               "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}, "fail.json")
    cmd = [sys.executable, "-m", "nodegraph.cli"]
    res = subprocess.run(cmd + ["validate", str(bad), "--home", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "node 1 (IntMath), input 'b'" in res.stderr
    res = subprocess.run(cmd + ["run", str(failing), "--home", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "node 1 (IntMath) failed: ZeroDivisionError: b is 0" in res.stderr
    res = subprocess.run(cmd + ["run", str(tmp_path / "missing.json"), "--home", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_nodes_json_is_the_object_info_catalogue(tmp_path, capsys):
    assert main(["nodes", "--json", "--home", str(tmp_path)]) == 0
    catalogue = json.loads(capsys.readouterr().out)
    from nodegraph.config import EngineConfig

    expected = Registry.load().object_info(EngineConfig(home=tmp_path))
    assert catalogue == json.loads(json.dumps(expected))
    assert catalogue["ExampleGreeting"]["input"]["required"]["punctuation"] == [["!", ".", "?"], {"default": "!"}]


def test_plugins_lists_errors(tmp_path, capsys):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "broken.py").write_text("raise RuntimeError('plugin exploded')\n")
    code = main(["plugins", "--home", str(tmp_path), "--plugin-dir", str(tmp_path / "plug")])
    out = capsys.readouterr().out
    assert code == 1
    assert "ERROR broken" in out and "plugin exploded" in out and "ok    nodes.utils" in out


def test_old_major_version_is_migrated_and_future_one_rejected(tmp_path, capsys):
    wf = {"1": {"class_type": "ExampleGreeting", "inputs": {"name": "Ada"}, "_meta": {"version": "1.4.0"}},
          "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    assert main(["run", str(write(tmp_path, wf)), "--home", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "2: Hello, Ada!"
    wf["1"]["_meta"]["version"] = "3.0.0"
    assert main(["run", str(write(tmp_path, wf)), "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "saved with ExampleGreeting 3.0.0, installed is 2.0.0" in err


BROKEN_OPTIONS_PLUGIN = '''
from nodegraph import Combo, Node, Output, hookimpl


def _models(config):
    raise OSError("models folder unreadable")


class PickModel(Node):
    CATEGORY = "test"
    INPUTS = {"name": Combo(_models)}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, name):
        return (name,)


@hookimpl
def nodegraph_nodes():
    return [PickModel]
'''


def test_plugins_names_a_node_whose_catalogue_entry_raises(tmp_path, capsys):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "pickmodel.py").write_text(BROKEN_OPTIONS_PLUGIN)
    code = main(["plugins", "--home", str(tmp_path), "--plugin-dir", str(tmp_path / "plug")])
    out = capsys.readouterr().out
    assert code == 1
    assert "ERROR pickmodel" in out and "'PickModel' is left out of the catalogue" in out
    assert "models folder unreadable" in out and "ok    nodes.utils" in out
    # The rest of the catalogue is still listed.
    assert main(["nodes", "--json", "--home", str(tmp_path), "--plugin-dir", str(tmp_path / "plug")]) == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert "PickModel" not in catalogue and "KSampler" in catalogue


def test_plugins_in_the_home_folder_are_found(tmp_path, capsys):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "homeplug.py").write_text(BROKEN_OPTIONS_PLUGIN.replace("PickModel", "HomeNode"))
    main(["plugins", "--home", str(tmp_path)])
    assert "homeplug" in capsys.readouterr().out
