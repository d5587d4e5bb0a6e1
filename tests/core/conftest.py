"""Fixtures for engine-core tests: an engine with the utility packs and a small test plugin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.registry import Registry

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import testnodes  # noqa: E402  (the test plugin, registered explicitly)

CORE_PACKS = ("nodes.utils", "nodes.image_io")


@pytest.fixture
def config(tmp_path: Path) -> EngineConfig:
    cfg = EngineConfig(home=tmp_path / "home")
    cfg.ensure_dirs()
    return cfg


@pytest.fixture
def make_engine(config: EngineConfig) -> Callable[..., Engine]:
    def factory(**kwargs: Any) -> Engine:
        registry = Registry.load(builtins=CORE_PACKS, entry_points=False, source_plugins=False,
                                 extra=[testnodes])
        return Engine(config, registry=registry, **kwargs)
    return factory


@pytest.fixture
def engine(make_engine) -> Engine:
    return make_engine()
