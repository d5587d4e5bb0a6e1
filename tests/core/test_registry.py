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


def test_builtin_packs_install_under_nodegraph_and_keep_their_editor_module():
    reg = Registry.load(builtins=("nodes.utils",), entry_points=False, source_plugins=False)
    assert reg.get("IntMath").cls.__module__ == "nodegraph.nodes.utils"  # no top-level `nodes` package
    assert reg.object_info()["IntMath"]["python_module"] == "nodes.utils"  # the editor groups "nodes.*" as core


def test_repository_plugins_folder_only_in_a_source_checkout(tmp_path):
    from nodegraph.registry import source_plugins_dir

    repo = Path(__file__).resolve().parents[2]
    assert source_plugins_dir() == repo / "plugins"
    site = tmp_path / "site-packages"  # installed: another tool's plugins/ beside the package
    write(site / "plugins", "other_tool.py", "raise SystemExit('not a nodegraph plugin')")
    assert source_plugins_dir(site) is None
    (site / "pyproject.toml").write_text('[project]\nname = "other-tool"\n')
    assert source_plugins_dir(site) is None
    (site / "pyproject.toml").write_text('[project]\nname = "nodegraph"\nversion = "0"\n')
    assert source_plugins_dir(site) == site / "plugins"


def test_home_plugins_folder_comes_first_then_extra_folders(tmp_path, monkeypatch):
    from nodegraph.config import EngineConfig

    monkeypatch.delenv("NODEGRAPH_PLUGIN_PATH", raising=False)
    write(tmp_path / "home" / "plugins", "shout.py", GOOD)
    write(tmp_path / "more", "whisper.py", GOOD.replace("Shout", "Whisper"))
    cfg = EngineConfig(home=tmp_path / "home", plugin_dirs=[tmp_path / "more"])
    reg = Registry.from_config(cfg, builtins=(), entry_points=False, source_plugins=False)
    assert reg.plugins["shout"].source == str(tmp_path / "home" / "plugins")
    assert reg.get("Shout") is not None and reg.get("Whisper") is not None and not reg.errors


def test_plugin_exiting_at_import_is_reported_and_the_rest_load(tmp_path):
    write(tmp_path, "a_exit.py", "import sys\nsys.exit('bye')\n")
    write(tmp_path, "b_base.py", "class Weird(BaseException):\n    pass\nraise Weird('odd')\n")
    write(tmp_path, "c_hook_exits.py", "from nodegraph import hookimpl\n@hookimpl\ndef nodegraph_nodes():\n"
                                       "    raise SystemExit(3)\n")
    write(tmp_path, "d_good.py", GOOD)
    reg = load(tmp_path)
    errors = dict(reg.errors)
    assert "SystemExit: bye" in errors["a_exit"] and "must not exit the process" in errors["a_exit"]
    assert "Weird: odd" in errors["b_base"]
    assert "nodegraph_nodes() raised SystemExit: 3" in errors["c_hook_exits"]
    assert reg.get("Shout") is not None and reg.plugins["d_good"].ok


def test_keyboard_interrupt_at_import_still_stops_the_start(tmp_path):
    write(tmp_path, "ctrl_c.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load(tmp_path)


FLAKY_OPTIONS = GOOD.replace("from nodegraph import", "from nodegraph import Combo,").replace(
    'INPUTS = {"text": String("")}', 'INPUTS = {"text": String(""), "style": Combo(styles)}').replace(
    "class Shout(Node):", "FAIL = [True]\n\ndef styles(config):\n    if FAIL[0]:\n"
    "        raise OSError('presets folder unreadable')\n    return ['loud']\n\nclass Shout(Node):").replace(
    "def execute(self, ctx, text):", "def execute(self, ctx, text, style):")


def test_node_whose_catalogue_entry_raises_is_left_out_and_named(tmp_path, caplog):
    import sys

    write(tmp_path, "flaky.py", FLAKY_OPTIONS)
    reg = load(tmp_path)
    info = reg.object_info()
    assert "Shout" not in info and "IntMath" in info  # the rest of the catalogue stands
    (error,) = reg.plugins["flaky"].errors
    assert "'Shout' is left out of the catalogue" in error and "presets folder unreadable" in error
    assert set(reg.broken) == {"Shout"} and reg.check_catalogue() == reg.broken
    assert reg.catalogue_entry("Shout") is None
    assert any("flaky" in r.getMessage() and "Shout" in r.getMessage() for r in caplog.records)
    reg.object_info()
    assert len(reg.plugins["flaky"].errors) == 1  # asked again: reported once
    sys.modules["nodegraph_plugins.flaky"].FAIL[0] = False  # the plugin's folder becomes readable
    assert reg.object_info()["Shout"]["input"]["required"]["style"][0] == ["loud"]
    assert reg.plugins["flaky"].ok and not reg.broken


@pytest.mark.asyncio
async def test_object_info_route_survives_a_node_whose_options_raise(tmp_path, aiohttp_client):
    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine
    from nodegraph.server import create_app

    write(tmp_path / "plugins", "flaky2.py", FLAKY_OPTIONS.replace("Shout", "Shout2"))
    reg = Registry.load([tmp_path / "plugins"], builtins=("nodes.utils",), entry_points=False, source_plugins=False)
    client = await aiohttp_client(create_app(Engine(EngineConfig(home=tmp_path / "home"), registry=reg)))
    resp = await client.get("/object_info")
    assert resp.status == 200
    body = await resp.json()
    assert "IntMath" in body and "Shout2" not in body
    assert await (await client.get("/api/object_info/Shout2")).json() == {}
    assert "Shout2" in dict(reg.errors)["flaky2"]
