"""Fixtures for the server tests: an engine with the test plugin, and real servers on loopback ports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nodegraph.config import EngineConfig  # noqa: E402
from nodegraph.engine import Engine  # noqa: E402
from nodegraph.registry import Registry  # noqa: E402
from nodegraph.server import ServerSettings, create_app  # noqa: E402

PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def registry() -> Registry:
    """One plugin registry (built-ins plus the test plugin) shared by the tests."""
    return Registry.load([PLUGINS])


@pytest.fixture
def engine(tmp_path: Path, registry: Registry) -> Engine:
    """An engine whose home is a fresh temporary folder."""
    return Engine(EngineConfig(home=tmp_path / "home", plugin_dirs=[PLUGINS]), registry=registry)


@pytest_asyncio.fixture
async def make_client(aiohttp_server: Any, aiohttp_client: Any):
    """Start a real server on a loopback port for an engine and settings; returns a test client for it."""
    async def make(engine: Engine, **settings: Any):
        server = await aiohttp_server(create_app(engine, ServerSettings(**settings)))
        return await aiohttp_client(server)
    return make


@pytest_asyncio.fixture
async def client(make_client: Any, engine: Engine):
    """A client of a server with default settings."""
    return await make_client(engine)
