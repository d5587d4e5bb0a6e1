"""Fixtures for the server tests: ``registry`` and ``engine`` (``nodegraph.testing``) with the test plugins, and real
servers on loopback ports (aiohttp's test server, so that tests can reach the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from server_helpers import PLUGINS

from nodegraph.engine import Engine
from nodegraph.server import ServerSettings, create_app


@pytest.fixture
def nodegraph_plugins() -> tuple[Path, ...]:
    """The test plugins, in ``registry`` and ``engine`` (whose worker processes load them too)."""
    return (PLUGINS,)


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
