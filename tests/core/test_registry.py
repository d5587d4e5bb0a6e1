"""Plugin discovery: built-ins, drop-in folders, entry points, and isolation of broken plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nodegraph.registry import Registry

GOOD = '''
from nodegraph import Node, Output, String, hookimpl

class Shout(Node):
    """Upper-case text."""
    INPUTS = {"text": String("")}
    OUTPUTS = (Output("STRING"),)
    def execute(self, ctx, text):
        return (text.upper(),)

@hookimpl
def nodegraph_nodes():
    return [Shout]
'''


def write(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


def load(folder: Path) -> Registry:
    return Registry.load([folder], builtins=("nodes.utils",), entry_points=False, source_plugins=False)


def test_builtin_packs_are_plugins():
    reg = Registry.load(builtins=("nodes.utils", "nodes.image_io"), entry_points=False, source_plugins=False)
    assert reg.plugins["nodes.utils"].source == "builtin"
    assert reg.get("IntMath").plugin == "nodes.utils"
    assert "SaveImage" in reg.plugins["nodes.image_io"].nodes


def test_folder_plugins_modules_and_packages(tmp_path):
    write(tmp_path, "shout.py", GOOD)
    write(tmp_path / "pkg", "__init__.py", "from .impl import nodegraph_nodes\n")
    write(tmp_path / "pkg", "impl.py", GOOD.replace("Shout", "Whisper").replace(".upper()", ".lower()"))
    write(tmp_path, "not-a-module.py", "raise SystemExit('never imported')")
    reg = load(tmp_path)
    assert reg.get("Shout").plugin == "shout" and reg.get("Whisper").plugin == "pkg"
    assert not reg.errors


def test_broken_plugin_is_isolated(tmp_path):
    write(tmp_path, "a_broken.py", "import does_not_exist_anywhere\n")
    write(tmp_path, "b_syntax.py", "def oops(:\n")
    write(tmp_path, "c_hook_raises.py", "from nodegraph import hookimpl\n@hookimpl\ndef nodegraph_nodes():\n"
                                        "    raise ValueError('bad hook')\n")
    write(tmp_path, "d_good.py", GOOD)
    reg = load(tmp_path)
    assert reg.get("Shout") is not None  # the rest loaded
    errors = dict(reg.errors)
    assert "does_not_exist_anywhere" in errors["a_broken"] and "Error importing plugin 'a_broken'" in errors["a_broken"]
    assert "SyntaxError" in errors["b_syntax"]
    assert "bad hook" in errors["c_hook_raises"]
    assert reg.plugins["d_good"].ok


def test_duplicate_node_name_is_rejected_with_a_clear_error(tmp_path):
    write(tmp_path, "dup.py", GOOD.replace("class Shout", "class IntMath").replace("[Shout]", "[IntMath]")
          .replace("return [IntMath]", "return [IntMath]"))
    reg = load(tmp_path)
    assert reg.get("IntMath").plugin == "nodes.utils"  # the first one stays
    (error,) = reg.plugins["dup"].errors
    assert "'IntMath' is already registered by plugin 'nodes.utils'" in error


def test_invalid_node_declaration_is_reported(tmp_path):
    write(tmp_path, "badver.py", GOOD.replace('"""Upper-case text."""', 'VERSION = "one"'))
    reg = load(tmp_path)
    assert reg.get("Shout") is None
    assert "semver" in reg.plugins["badver"].errors[0]


def test_extra_folder_from_environment(tmp_path, monkeypatch):
    write(tmp_path / "envplugins", "shout.py", GOOD)
    monkeypatch.setenv("NODEGRAPH_PLUGIN_PATH", str(tmp_path / "envplugins"))
    from nodegraph.config import EngineConfig

    cfg = EngineConfig(home=tmp_path / "home")
    reg = Registry.load(cfg.plugin_dirs, builtins=(), entry_points=False, source_plugins=False)
    assert reg.get("Shout") is not None


def test_example_plugin_loads_through_its_entry_point():
    reg = Registry.load(builtins=("nodes.utils",), source_plugins=False)
    info = reg.plugins.get("example")
    if info is None:
        pytest.fail("the example plugin is not installed: pip install ./plugins/nodegraph-example")
    assert info.source == "entrypoint" and info.version == "1.2.0"
    assert set(info.nodes) == {"ExampleGreeting", "ExampleCheckerboard"}


def test_source_plugins_folder_is_scanned():
    reg = Registry.load(builtins=(), entry_points=False)
    assert reg.get("ReverseText").plugin == "example_dropin"


def test_suggestions():
    reg = Registry.load(builtins=("nodes.utils",), entry_points=False, source_plugins=False)
    assert reg.suggest("intmath")[0] == "IntMath"
