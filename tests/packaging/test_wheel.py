"""The wheel installs only ``nodegraph*`` names: built-in packs and templates work from a folder that holds another
tool's ``nodes.py`` and ``plugins/``, and no module beside the installed package is taken for a plugin."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from nodegraph.testing import build_wheel, run_checked

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_TEMPLATES = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
BUILD_LEFTOVERS = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                         ".home", "runs", ".benchmarks", "tests", "bench")

#: A plugin that must never load: it would add JunkNode to the catalogue.
JUNK_PLUGIN = """
from nodegraph import Node, Output, hookimpl

class {name}(Node):
    \"\"\"Must not be in the catalogue.\"\"\"
    OUTPUTS = (Output("INT"),)
    def execute(self, ctx):
        return (1,)

@hookimpl
def nodegraph_nodes():
    return [{name}]
"""

#: Run inside the installed venv, from the folder holding the junk: where each name comes from, and the templates.
PROBE = """
import importlib.util, json, sys
import nodegraph, nodegraph.nodes.loaders
from nodegraph.config import EngineConfig
from nodegraph.registry import Registry
from nodegraph.server.routes.frontend import template_names
reg = Registry.from_config(EngineConfig())
print(json.dumps({"nodegraph": nodegraph.__file__, "loaders": nodegraph.nodes.loaders.__file__,
                  "cwd_nodes": importlib.util.find_spec("nodes").origin, "templates": template_names(),
                  "plugins": sorted(reg.plugins), "errors": reg.errors}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The wheel, built from a clean copy of this checkout (no stale build/ folder)."""
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NODEGRAPH_PLUGIN_PATH", "PIP_USER")}
    wheel = build_wheel(ROOT, base, env, ignore=BUILD_LEFTOVERS)
    assert wheel.name.startswith("nodegraph-")
    return {"base": base, "wheel": wheel, "env": env}


@pytest.fixture(scope="module")
def installed(built: dict) -> dict:
    """The wheel installed in a fresh venv (system packages for torch & co., but not the checkout's nodegraph)."""
    base, env, venv = built["base"], built["env"], built["base"] / "venv"
    # --without-pip: the venv's own old pip/setuptools would shadow the system's; the system pip installs into it.
    run_checked([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], base, env)
    python = venv / "bin" / "python"
    run_checked([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(built["wheel"])],
                base, env)
    site = Path(run_checked([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base,
                            env).strip())
    return {**built, "python": python, "site": site}


def test_wheel_holds_only_nodegraph_names(built):
    import zipfile

    wheel = zipfile.ZipFile(built["wheel"])
    names = wheel.namelist()
    top = {n.split("/", 1)[0] for n in names}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["nodegraph"]
    assert {t for t in top if not t.startswith("nodegraph")} == set(), top
    assert "nodegraph/nodes/loaders.py" in names
    assert {f"nodegraph/workflows/{t}.json" for t in SHIPPED_TEMPLATES} <= set(names)


@pytest.mark.slow
def test_installed_wheel_beside_another_tools_nodes_and_plugins(installed):
    base, python, site = installed["base"], installed["python"], installed["site"]
    run = base / "comfy"  # a folder as ComfyUI's: its own nodes.py and plugins/
    (run / "plugins").mkdir(parents=True)
    (run / "nodes.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (run / "plugins" / "junk_cwd.py").write_text(textwrap.dedent(JUNK_PLUGIN.format(name="JunkCwd")))
    (site / "plugins").mkdir(exist_ok=True)  # another tool's top-level `plugins` beside the installed package
    (site / "plugins" / "junk_site.py").write_text(textwrap.dedent(JUNK_PLUGIN.format(name="JunkSite")))
    env = {**installed["env"], "NODEGRAPH_HOME": str(base / "home"), "HF_HUB_OFFLINE": "1"}

    probe = json.loads(run_checked([str(python), "-c", PROBE], run, env).splitlines()[-1])
    venv = str(base / "venv")
    assert probe["nodegraph"].startswith(venv) and probe["loaders"].startswith(venv), probe  # not the checkout
    assert probe["cwd_nodes"] == str(run / "nodes.py")  # the colliding module really is importable as `nodes`
    assert probe["templates"] == {"nodegraph": SHIPPED_TEMPLATES}
    assert not [p for p in probe["plugins"] if "junk" in p] and not probe["errors"], probe

    # The command line, started from that folder (`python -c` puts it first on sys.path).
    out = run_checked([str(python), "-c", "import sys; from nodegraph.cli import main; sys.exit(main(sys.argv[1:]))",
                "nodes", "--json"], run, env)
    catalogue = json.loads(out)
    assert {"KSampler", "CheckpointLoaderSimple", "SaveImage", "IntMath"} <= set(catalogue)
    assert not {"JunkCwd", "JunkSite"} & set(catalogue)
    core = [e for e in catalogue.values() if e["python_module"].startswith("nodes.")]
    assert len(core) >= 20  # the editor groups the built-in packs as core nodes
    assert run_checked([str(base / "venv" / "bin" / "nodegraph"), "plugins"], run, env).count("junk") == 0


def test_editable_checkout_maps_nodes_without_a_top_level_name(tmp_path):
    """The README's `pip install -e .`: nodegraph.nodes is the checkout's nodes/, and `nodes` is not installed."""
    code = ("import importlib.util, json, nodegraph.nodes.loaders as m; "
            "print(json.dumps([m.__file__, importlib.util.find_spec('nodes') is None]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    loaders, no_top_level = json.loads(run_checked([sys.executable, "-c", code], tmp_path, env))
    assert Path(loaders) == ROOT / "nodes" / "loaders.py" and no_top_level
