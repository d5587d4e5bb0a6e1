"""Fixtures for engine-core tests: an engine with the utility packs and a small test plugin (nodegraph.testing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.testing import build_engine, build_registry, load_plugin_file

#: The test plugin, imported under its plugin name ``testnodes`` (what provenance manifests record).
testnodes = load_plugin_file(Path(__file__).with_name("testnodes.py"))

CORE_PACKS = ("nodes.utils", "nodes.image_io")


@pytest.fixture
def config(nodegraph_config: EngineConfig) -> EngineConfig:
    """The engine's config on a temporary home (nodegraph.testing's ``nodegraph_config``)."""
    return nodegraph_config


@pytest.fixture
def make_engine(config: EngineConfig) -> Callable[..., Engine]:
    """Engines over the utility packs plus the test plugin (``tests/core/testnodes.py``)."""
    def factory(**kwargs: Any) -> Engine:
        return build_engine(config, build_registry(testnodes, builtins=CORE_PACKS), **kwargs)
    return factory


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    """An engine over the utility packs and the test plugin."""
    return make_engine()


@pytest.fixture
def testnodes_path() -> Path:
    """The test plugin's file (for tests that load it as a drop-in plugin)."""
    return Path(testnodes.__file__)
