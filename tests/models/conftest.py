"""Fixtures for the model-memory tests: the tiny real diffusers models of tests/diffusion, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diffusion"))

from tiny_models import TinySD, build_tiny_sd  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> TinySD:
    """The tiny SD1.x-shaped model as ``models/checkpoints/tiny-sd/`` and ``tiny-sd.safetensors``."""
    return build_tiny_sd(tmp_path_factory.mktemp("models-home"))
