"""Graph helpers for tests (ours and plugin authors'): run a workflow through a real Engine and read node values back.

``Capture`` is an output node that keeps whatever is linked into it; ``capture_engine`` builds an engine with it,
``run_captured`` runs a workflow and returns ``(RunResult, {capture node id: value})``, and ``txt2img_graph`` is the
standard text-to-image graph on a checkpoint name, with its image and latent captured as ``img`` and ``lat``.
Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from .engine import Engine
from .inputs import Link
from .node import Node, NodeOutput
from .testing import build_engine, build_registry


class Captured(dict):
    """Service where Capture nodes store the values they receive, by node id."""


class Capture(Node):
    """Test output node: keeps the linked value (never cached, so it runs every time)."""

    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"value": Link("*")}

    def execute(self, ctx: Any, value: Any) -> NodeOutput:
        ctx.services.get(Captured)[ctx.node_id] = value
        return NodeOutput((), {"captured": [ctx.node_id]})


def capture_engine(config: Any, extra_nodes: tuple[type[Node], ...] = ()) -> Engine:
    """An Engine over the built-in packs plus Capture (and ``extra_nodes``), on ``config``'s home folder."""
    registry = build_registry(Capture, *extra_nodes)
    assert not registry.errors, registry.errors
    return build_engine(config, registry)


def run_captured(engine: Engine, workflow: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Validate and run ``workflow``; returns (RunResult, {capture node id: value})."""
    captured = engine.services.get(Captured)
    captured.clear()
    result = engine.run(engine.prepare(workflow), **kwargs)
    return result, dict(captured)


def txt2img_graph(ckpt: str = "tiny-sd", *, positive: str = "a red circle", negative: str = "blue", width: int = 64,
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
