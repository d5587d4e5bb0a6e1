"""The output cache's default bound is bytes: a 3,000-node graph of small values re-runs fully cached."""

from __future__ import annotations

from pathlib import Path

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.registry import Registry
from nodegraph.testing import load_plugin_file

#: The core tests' plugin: Const, AddOne, Sink.
testnodes = load_plugin_file(Path(__file__).resolve().parent.parent / "core" / "testnodes.py")


def test_3000_small_nodes_rerun_fully_cached(tmp_path: Path) -> None:
    config = EngineConfig(home=tmp_path / "home")  # the defaults under test
    config.ensure_dirs()
    registry = Registry.load(builtins=("nodes.utils",), entry_points=False, source_plugins=False, extra=[testnodes])
    engine = Engine(config, registry=registry)
    graph = {}
    for i in range(1000):  # 1,000 outputs, each Const -> AddOne -> Sink: 3,000 nodes
        graph[f"c{i}"] = {"class_type": "Const", "inputs": {"value": i % 1000}}
        graph[f"a{i}"] = {"class_type": "AddOne", "inputs": {"x": [f"c{i}", 0]}}
        graph[f"s{i}"] = {"class_type": "Sink", "inputs": {"value": [f"a{i}", 0]}}
    first = engine.run(engine.prepare(graph)).raise_for_status()
    assert len(first.executed) == 3000
    again = engine.run(engine.prepare(graph)).raise_for_status()
    assert again.executed == [] and len(again.cached) == 1000
    assert again.outputs["s999"] == {"value": [1000]}
    assert engine.cache.stats.evictions == 0 and engine.cache.nbytes < 2 * 1024**2  # about 500 bytes an entry
