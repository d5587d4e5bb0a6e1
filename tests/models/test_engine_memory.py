"""Through the real Engine: the output cache keeps handles, the manager's budget evicts checkpoints for real, and
a re-run after eviction reloads the model and makes the identical image."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import torch

from nodegraph.models import ModelHandle, ModelManager  # noqa: E402
from nodegraph.testing_graphs import capture_engine as make_engine
from nodegraph.testing_graphs import run_captured as run
from nodegraph.testing_graphs import txt2img_graph as txt2img


def _graph(ckpt: str, seed: int = 42) -> dict:
    graph = txt2img(ckpt, steps=2, seed=seed)
    graph["model"] = {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}}
    return graph


def test_checkpoints_evicted_under_the_budget_and_reloaded_identically(tiny_sd) -> None:
    probe = ModelManager()
    size = probe.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd").model.size
    config = dataclasses.replace(tiny_sd.config, model_ram_budget=int(size * 1.5), plugin_dirs=[])
    engine = make_engine(config)
    result, cap = run(engine, _graph("tiny-sd"))
    result.raise_for_status()
    handle = cap["model"]
    assert isinstance(handle, ModelHandle)
    ref = weakref.ref(handle.get().unet)
    assert engine.cache.nbytes < 1024**2  # handles, latents and conditionings: no weights
    run(engine, _graph("tiny-sd.safetensors"))[0].raise_for_status()
    gc.collect()
    assert ref() is None  # the first checkpoint's modules are gone though its handles are still cached
    manager = engine.services.find(ModelManager)
    assert manager.stats.evictions >= 1 and manager.nbytes <= config.model_ram_budget
    result, cap = run(engine, _graph("tiny-sd", seed=43))
    assert "ckpt" not in result.raise_for_status().executed  # the cached handle ...
    assert manager.stats.reloads == 1  # ... loads the file again when the sampler needs it
    reference = run(make_engine(tiny_sd.config), _graph("tiny-sd", seed=43))[1]["img"]  # never evicted
    assert torch.equal(cap["img"], reference)
