"""Fixtures for the model-family tests: a tiny random-weight Flux.1 saved as ComfyUI's split files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flux_tiny import TinyFlux, build

from nodegraph.config import EngineConfig

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> TinyFlux:
    """The tiny Flux modules and their files (three transformer layouts, CLIP-L, T5 + tokenizer, ae VAE)."""
    return build(tmp_path_factory.mktemp("tiny-flux-home"))


@pytest.fixture(scope="session")
def flux_config(tiny_flux: TinyFlux) -> EngineConfig:
    """An EngineConfig on the tiny Flux home."""
    cfg = EngineConfig(home=tiny_flux.home)
    cfg.ensure_dirs()
    return cfg


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every family test builds or runs a (tiny) real model: all are ``slow``."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
