"""Meta-tests on the hooks: each is documented in one line and each is exercised (here, via the example plugin)."""

from __future__ import annotations

import inspect
from pathlib import Path

from nodegraph import hookspecs
from nodegraph.config import EngineConfig
from nodegraph.registry import Registry

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("nodegraph_") and callable(fn)]


def test_every_hook_has_a_one_line_docstring():
    assert set(HOOKS) == {"nodegraph_nodes", "nodegraph_types", "nodegraph_model_folders", "nodegraph_routes",
                          "nodegraph_web_directory"}
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and "\n" not in doc, name


def test_every_hook_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in HOOKS:
        assert f"`{name}`" in readme, name


def test_example_plugin_implements_every_hook(tmp_path):
    reg = Registry.load(builtins=(), source_plugins=False)
    assert reg.plugins["example"].ok, reg.plugins["example"].errors
    assert reg.link_types()["GREETING"].startswith("a greeting")
    assert reg.link_types()["IMAGE"] == "built-in"
    folders = reg.model_folders()
    assert folders["example_presets"] == [".json"] and folders["checkpoints"] == [".safetensors"]
    web = reg.web_directories()["example"]
    assert (Path(web) / "example.js").is_file()
    ((plugin, routes),) = reg.routes(EngineConfig(home=tmp_path))
    assert plugin == "example" and [r.path for r in routes] == ["/example/hello"]


def test_failing_secondary_hook_is_isolated(tmp_path):
    (tmp_path / "bad_routes.py").write_text(
        "from nodegraph import hookimpl\n@hookimpl\ndef nodegraph_routes(config):\n    raise OSError('no routes')\n")
    reg = Registry.load([tmp_path], builtins=(), entry_points=False, source_plugins=False)
    assert reg.routes(EngineConfig(home=tmp_path)) == []
    assert "no routes" in reg.plugins["bad_routes"].errors[0]
