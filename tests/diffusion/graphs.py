"""Helpers for running diffusion workflows through the real Engine in tests, and reading node outputs back."""

from __future__ import annotations

from typing import Any

import torch

from nodegraph import Link, Node, NodeOutput
from nodegraph.engine import Engine
from nodegraph.testing import build_engine, build_registry

# On the shared 2-core test machine, two OpenMP threads fighting other processes make a tiny UNet call ~50×
# slower (2 s instead of 30 ms); one thread keeps the diffusion tests fast. Both sides of every parity check run
# in this process, so they share the setting.
torch.set_num_threads(1)


class Captured(dict):
    """Service where Capture nodes store the values they receive, by their ``tag``."""


class Capture(Node):
    """Test output node: keeps the linked value (never cached, so it runs every time)."""

    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"value": Link("*")}

    def execute(self, ctx, value):
        ctx.services.get(Captured)[ctx.node_id] = value
        return NodeOutput((), {"captured": [ctx.node_id]})


def make_engine(config: Any, extra_nodes: tuple[type[Node], ...] = ()) -> Engine:
    """An Engine over the built-in packs plus Capture (and ``extra_nodes``), on ``config``'s home folder."""
    registry = build_registry(Capture, *extra_nodes)
    assert not registry.errors, registry.errors
    return build_engine(config, registry)


def run(engine: Engine, workflow: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Validate and run ``workflow``; returns (RunResult, {capture node id: value})."""
    captured = engine.services.get(Captured)
    captured.clear()
    result = engine.run(engine.prepare(workflow), **kwargs)
    return result, dict(captured)


def txt2img(ckpt: str = "tiny-sd", *, positive: str = "a red circle", negative: str = "blue", width: int = 64,
            height: int = 64, batch: int = 1, seed: int = 42, steps: int = 4, cfg: float = 7.5,
            sampler: str = "euler", scheduler: str = "normal", denoise: float = 1.0) -> dict[str, Any]:
    """CheckpointLoaderSimple → CLIPTextEncode ×2 → EmptyLatentImage → KSampler → VAEDecode, captured as "img"."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height,
                                                                "batch_size": batch}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": denoise}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "lat": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
    }
