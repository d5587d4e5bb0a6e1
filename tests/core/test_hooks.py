"""Meta-tests on the hooks: each is documented in one line and each is exercised (here, via the example plugin)."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from nodegraph import hookspecs
from nodegraph.config import EngineConfig
from nodegraph.registry import Registry

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("nodegraph_") and callable(fn)]


def test_every_hook_is_typed_and_fully_documented():
    assert set(HOOKS) == {"nodegraph_nodes", "nodegraph_types", "nodegraph_model_folders", "nodegraph_routes",
                          "nodegraph_web_directory"}
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        summary, _, body = (inspect.getdoc(fn) or "").partition("\n\n")
        assert summary and "\n" not in summary and body, f"{name}: a one-line summary, a blank line, then details"
        assert ":return:" in body, name
        sig = inspect.signature(fn)
        assert sig.return_annotation is not inspect.Signature.empty, name
        for param in sig.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
            assert f":param {param.name}:" in body, f"{name}: document {param.name}"


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
    assert ".ckpt" in reg.model_folders(EngineConfig(home=tmp_path, allow_unsafe_pickle=True))["checkpoints"]
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


def _plugin(folder: Path, name: str, source: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


NODES = """
from nodegraph import Node, Output, String, hookimpl

class Loud(Node):
    \"\"\"Upper-case text.\"\"\"
    INPUTS = {"text": String("")}
    OUTPUTS = (Output("STRING"),)
    def execute(self, ctx, text):
        return (text.upper(),)

class Hidden(Loud):
    \"\"\"A node the wrapper removes.\"\"\"
"""


def test_hook_wrappers_run_around_each_plugins_call(tmp_path):
    _plugin(tmp_path, "a_filter.py", """
        from nodegraph import hookimpl

        @hookimpl(wrapper=True)
        def nodegraph_nodes():
            results = yield  # one list of classes per plugin called
            return [[c for c in classes if c.__name__ != "Hidden"] for classes in results]
        """)
    _plugin(tmp_path, "b_nodes.py", NODES + "\n@hookimpl\ndef nodegraph_nodes():\n    return [Loud, Hidden]\n")
    reg = Registry.load([tmp_path], builtins=("nodes.utils",), entry_points=False, source_plugins=False)
    assert not reg.errors, reg.errors
    assert reg.get("Loud").plugin == "b_nodes" and reg.get("Hidden") is None
    assert reg.get("IntMath") is not None  # the wrapper wrapped the built-in pack's call too


def test_misspelt_or_unmarked_hook_is_a_plugin_error_naming_the_fix(tmp_path):
    _plugin(tmp_path, "typo.py", NODES + "\n@hookimpl\ndef nodegraph_node():\n    return [Loud]\n")
    _plugin(tmp_path, "unmarked.py", NODES.replace("Loud", "Quiet") + "\ndef nodegraph_nodes():\n    return [Quiet]\n")
    _plugin(tmp_path, "wrong_args.py", NODES.replace("Loud", "Odd") + "\n@hookimpl\ndef nodegraph_nodes(ctx):\n"
                                                                     "    return [Odd]\n")
    _plugin(tmp_path, "own_hook.py", "from nodegraph import hookimpl\n"
                                     "@hookimpl(optionalhook=True)\ndef nodegraph_later():\n    return 1\n")
    reg = Registry.load([tmp_path], builtins=(), entry_points=False, source_plugins=False)
    (typo,) = reg.plugins["typo"].errors
    assert "nodegraph_node() is not a nodegraph hook" in typo and "rename it to nodegraph_nodes" in typo
    (wrong_args,) = reg.plugins["wrong_args"].errors
    assert "nodegraph_nodes" in wrong_args and "'ctx'" in wrong_args and "only the parameters" in wrong_args
    (unmarked,) = reg.plugins["unmarked"].errors
    assert "nodegraph_nodes() is not marked" in unmarked and "@nodegraph.hookimpl" in unmarked
    assert reg.plugins["own_hook"].ok


def test_routes_get_the_app_and_the_engine(tmp_path):
    from nodegraph.engine import Engine
    from nodegraph.server import create_app

    _plugin(tmp_path / "plugins", "ctx_routes.py", """
        from aiohttp import web
        from nodegraph import hookimpl

        SEEN = {}

        @hookimpl
        def nodegraph_routes(app, engine, config):
            SEEN.update(app=app, engine=engine, config=config)
            return []
        """)
    reg = Registry.load([tmp_path / "plugins"], builtins=(), entry_points=False, source_plugins=False)
    engine = Engine(EngineConfig(home=tmp_path / "home"), registry=reg)
    app = create_app(engine)
    import sys

    seen = sys.modules["nodegraph_plugins.ctx_routes"].SEEN
    assert seen == {"app": app, "engine": engine, "config": engine.config} and reg.plugins["ctx_routes"].ok


TYPES = NODES + """
from nodegraph import Link

class MakeShouty(Node):
    \"\"\"A SHOUTY string.\"\"\"
    OUTPUTS = (Output("SHOUTY"),)
    def execute(self, ctx):
        return ("HI",)

class Show(Node):
    \"\"\"Takes a STRING link.\"\"\"
    OUTPUT_NODE = True
    INPUTS = {"text": Link("STRING")}
    def execute(self, ctx, text):
        return ()

@hookimpl
def nodegraph_nodes():
    return [MakeShouty, Show]
"""


def test_declared_subtypes_reach_validation(tmp_path):
    from nodegraph.validation import ValidationReport, Validator
    from nodegraph.workflow import parse_workflow

    graph = {"1": {"class_type": "MakeShouty", "inputs": {}},
             "2": {"class_type": "Show", "inputs": {"text": ["1", 0]}}}
    _plugin(tmp_path / "plain", "shouty.py", TYPES)
    plain = Registry.load([tmp_path / "plain"], builtins=(), entry_points=False, source_plugins=False)
    with pytest.raises(ValidationReport) as report:
        Validator(plain).validate(parse_workflow(graph))
    assert "expects STRING but node 1 (MakeShouty) output 0 is SHOUTY" in report.value.render()

    _plugin(tmp_path / "typed", "shouty_typed.py", TYPES + """
@hookimpl
def nodegraph_types():
    return {"SHOUTY": {"description": "an upper-case string", "subtype_of": ["STRING"]}, "IMAGE": "mine now"}
""")
    typed = Registry.load([tmp_path / "typed"], builtins=(), entry_points=False, source_plugins=False)
    assert Validator(typed).validate(parse_workflow(graph)).order == ["1", "2"]
    assert typed.link_types()["SHOUTY"] == "an upper-case string" and typed.link_types()["IMAGE"] == "built-in"
    (error,) = typed.plugins["shouty_typed"].errors
    assert "'IMAGE' is built in and cannot be redeclared" in error
    assert typed.types_compatible("SHOUTY", "STRING") and not typed.types_compatible("STRING", "SHOUTY")
