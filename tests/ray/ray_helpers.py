"""Helpers for the backend tests: test plugin folders, engines and graphs (no Ray import here)."""

from __future__ import annotations

from pathlib import Path

from nodegraph import Int, Node, NodeOutput
from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.testing import build_engine, build_registry

HERE = Path(__file__).resolve().parent
#: Test nodes every worker has.
PLUGINS = HERE / "plugins"
#: A node only some workers have.
EXTRA = HERE / "plugins_extra"


class HeadOnly(Node):
    """A node the head knows and no worker has."""

    OUTPUT_NODE = True
    INPUTS = {"value": Int(0)}
    OUTPUTS = ()

    def execute(self, ctx, value: int):
        return NodeOutput((), {"text": [str(value)]})


def make_config(home: Path, *plugin_dirs: Path) -> EngineConfig:
    """A config on ``home`` (models in ``home/models``) with the given plugin folders."""
    config = EngineConfig(home=home, models_dir=home / "models", plugin_dirs=list(plugin_dirs))
    config.ensure_dirs()
    return config


def make_engine(home: Path, head_only: bool = False) -> Engine:
    """An engine with the built-in packs and both test plugin folders (and HeadOnly when asked)."""
    extra = [HeadOnly] if head_only else []
    return build_engine(make_config(home, PLUGINS, EXTRA), build_registry(PLUGINS, EXTRA, *extra))


def checkpoint_graph(name: str = "a", seed: int = 1, steps: int = 3, step_ms: int = 10, load_ms: int = 200,
                     preview: bool = False, tag: str = "", save: bool = False) -> dict:
    """FakeCheckpoint → Generate."""
    return {"1": {"class_type": "FakeCheckpoint", "inputs": {"name": name, "load_ms": load_ms}},
            "2": {"class_type": "Generate", "inputs": {"model": ["1", 0], "seed": seed, "steps": steps,
                                                       "step_ms": step_ms, "preview": preview, "tag": tag,
                                                       "save": save}}}
