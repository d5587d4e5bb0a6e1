"""Fixtures for the model-memory tests: the tiny real model of ``nodegraph.testing``, built once per session."""

from __future__ import annotations

import pytest

from nodegraph.testing import TinyCheckpoint


@pytest.fixture(scope="session")
def tiny_sd(tiny_checkpoint: TinyCheckpoint) -> TinyCheckpoint:
    """The tiny SD1.x-shaped model as ``models/checkpoints/tiny-sd/`` (``folder``) and ``tiny-sd.safetensors``
    (``single_file``), with ``config`` for its home."""
    return tiny_checkpoint
