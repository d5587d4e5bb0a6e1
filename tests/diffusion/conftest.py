"""Fixtures for the diffusion tests: tiny real models built from configs, saved in a temporary home folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nodegraph._tiny import TinySD, build_tiny_sd, build_tiny_sdxl
from nodegraph.diffusion.devices import DeviceManager

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> TinySD:
    """A tiny SD1.x-shaped model saved as ``models/checkpoints/tiny-sd/`` and ``tiny-sd.safetensors`` (LDM keys).

    Attributes: ``home``, ``models_dir``, ``folder``, ``single_file``, ``config`` (an EngineConfig for that home)
    and ``components`` (the in-memory unet/vae/text_encoder/tokenizer/scheduler that were saved).
    """
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-home"))


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> TinySD:
    """A tiny SDXL-shaped model (two text encoders, text_time conditioning), saved like ``tiny_sd``.

    ``tiny-sdxl/`` is a StableDiffusionXLPipeline folder; ``tiny-sdxl.safetensors`` uses SDXL's single-file names
    (``conditioner.embedders.0.transformer.*`` CLIP, ``conditioner.embedders.1.model.*`` OpenCLIP).
    """
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl-home"))


@pytest.fixture(scope="module")
def model(tiny_sd: TinySD) -> Any:
    """The tiny SD model's MODEL (``load_checkpoint`` of its folder), loaded once per module."""
    from nodegraph.diffusion.loading import load_checkpoint

    return load_checkpoint(tiny_sd.folder, tiny_sd.config).model


@pytest.fixture(scope="module")
def devices() -> DeviceManager:
    """A CPU-only DeviceManager."""
    return DeviceManager(force_cpu=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every diffusion test builds or runs a (tiny) real model: all are ``slow`` (``-m "not slow"`` skips them)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)
