"""Fixtures for the Python API tests: one engine (embedded model loaded once) and the text-to-image graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.pyapi import Graph

ROOT = Path(__file__).resolve().parents[2]
TXT2IMG = ROOT / "workflows" / "txt2img.json"
CKPT = "nodegraph-shapes-v1"


@pytest.fixture(scope="module")
def shapes_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine on a fresh home folder; the embedded model loads on first use and stays for the module."""
    config = EngineConfig(home=tmp_path_factory.mktemp("pyapi-home"))
    config.ensure_dirs()
    return Engine(config)


def txt2img(g: Graph, seed: int = 1, steps: int = 2, text: str = "a red circle on a blue background") -> dict[str, Any]:
    """Build the standard graph at 64×64 with few steps; returns its handles by name."""
    model, clip, vae = g.CheckpointLoaderSimple(ckpt_name=CKPT)
    pos = g.CLIPTextEncode(clip=clip, text=text)
    neg = g.CLIPTextEncode(clip=clip, text="")
    latent = g.EmptyLatentImage(width=64, height=64, batch_size=1)
    sampled = g.KSampler(model=model, positive=pos, negative=neg, latent_image=latent, seed=seed, steps=steps,
                         cfg=4.0)
    image = g.VAEDecode(samples=sampled, vae=vae)
    save = g.SaveImage(images=image, filename_prefix="pyapi")
    return {"model": model, "clip": clip, "vae": vae, "pos": pos, "neg": neg, "latent": latent, "sampled": sampled,
            "image": image, "save": save}
