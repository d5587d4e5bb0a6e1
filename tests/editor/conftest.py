"""Fixtures for the editor tests: a registry with the built-ins plus the editor test plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.registry import Registry

from .helpers import PLUGINS


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Built-in packs plus the editor test plugin (SlowInvert and a web folder)."""
    return Registry.load([PLUGINS])


@pytest.fixture
def engine(tmp_path: Path, registry: Registry) -> Engine:
    """An engine on a fresh home folder."""
    return Engine(EngineConfig(home=tmp_path / "home", plugin_dirs=[PLUGINS]), registry=registry)
