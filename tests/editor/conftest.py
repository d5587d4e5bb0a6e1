"""Fixtures for the editor tests: ``registry`` and ``engine`` (``nodegraph.testing``) with the editor test plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import PLUGINS


@pytest.fixture
def nodegraph_plugins() -> tuple[Path, ...]:
    """The editor test plugin (SlowInvert and a web folder)."""
    return (PLUGINS,)
