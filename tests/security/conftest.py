"""Fixtures for the security tests: the tiny real model of the diffusion tests, built once per session."""

from __future__ import annotations

import pytest

from nodegraph._tiny import TinySD, build_tiny_sd


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> TinySD:
    """A tiny SD1.x model saved as a diffusers folder and as a nodegraph single-file export (configs in its header)."""
    return build_tiny_sd(tmp_path_factory.mktemp("security-tiny-home"))
