"""Training a LoRA in the graph on the tiny model: the loss falls, the saved file means what the in-graph LoRA
means, an interrupt keeps what was learnt, a seed gives the same file, and a saved LoRA can be trained on."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch
from safetensors import safe_open

from nodegraph.config import EngineConfig
from nodegraph.context import InterruptFlag
from nodegraph.events import EventBus, NodeProgress
from nodegraph.testing_graphs import capture_engine, run_captured

pytestmark = pytest.mark.slow  # each graph trains a few steps: ~1-3 s apiece on one thread


def _home(tiny_checkpoint, tmp_path) -> EngineConfig:
    """A home of its own (saved LoRAs stay out of the shared tiny home) with a copy of the tiny checkpoint."""
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    shutil.copy(tiny_checkpoint.single_file, config.model_dir("checkpoints") / "tiny-sd.safetensors")
    return config


def _train_graph(steps: int = 6, lr: float = 1e-2, seed: int = 0, existing: str = "[None]") -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
        "data": {"class_type": "ShapeConceptDataset", "inputs": {"concept": "star", "count": 3, "prior_images": 3,
                                                                  "seed": 0, "size": 32}},
        "ds": {"class_type": "ImageDataset", "inputs": {"images": ["data", 0], "clip": ["ckpt", 1],
                                                         "captions": ["data", 1]}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["ds", 0], "vae": ["ckpt", 2]}},
        "train": {"class_type": "TrainLoraNode", "inputs": {
            "model": ["ckpt", 0], "latents": ["enc", 0], "positive": ["ds", 1], "batch_size": 2,
            "grad_accumulation_steps": 1, "steps": steps, "learning_rate": lr, "rank": 4, "optimizer": "AdamW",
            "loss_function": "MSE", "seed": seed, "training_dtype": "fp32", "lora_dtype": "bf16",
            "algorithm": "LoRA", "gradient_checkpointing": False, "existing_lora": existing}},
        "lora": {"class_type": "Capture", "inputs": {"value": ["train", 1]}},
        "loss": {"class_type": "Capture", "inputs": {"value": ["train", 2]}},
        "steps": {"class_type": "Capture", "inputs": {"value": ["train", 3]}},
    }


def _sample(wf: dict, model: list, node: str = "ks") -> dict:
    wf.update({
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red star", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        node: {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 7, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        f"{node}_out": {"class_type": "Capture", "inputs": {"value": [node, 0]}},
    })
    return wf


def test_loss_decreases_and_lora_changes_the_model(tiny_checkpoint, tmp_path):
    engine = capture_engine(_home(tiny_checkpoint, tmp_path))
    wf = _sample(_train_graph(steps=30), ["train", 0])
    _sample(wf, ["ckpt", 0], node="base")
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    losses = cap["loss"]["loss"]
    assert len(losses) == 30 and cap["steps"] == 30
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    keys = list(cap["lora"].tensors)
    assert any(k.endswith(".lora_down.weight") and k.startswith("lora_unet_down_blocks_") for k in keys)
    assert not torch.equal(cap["ks_out"]["samples"], cap["base_out"]["samples"])


def test_saved_file_loads_with_lora_loader_exactly_as_in_graph(tiny_checkpoint, tmp_path):
    config = _home(tiny_checkpoint, tmp_path)
    engine = capture_engine(config)
    wf = _train_graph(steps=4)
    wf["save"] = {"class_type": "SaveLoRA", "inputs": {"lora": ["train", 1], "prefix": "trained/t", "steps": 4}}
    wf["apply"] = {"class_type": "LoraModelLoader", "inputs": {"model": ["ckpt", 0], "lora": ["train", 1],
                                                               "strength_model": 0.8}}
    _sample(wf, ["apply", 0])
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    saved = config.model_dir("loras") / "trained" / "t_4_steps_00001_.safetensors"
    assert saved.is_file()
    assert result.outputs["save"]["text"] == ["saved LoRA trained/t_4_steps_00001_.safetensors"]
    with safe_open(str(saved), "pt") as f:
        meta = f.metadata()
    import json

    record = json.loads(meta["nodegraph_training"])
    assert record["steps"] == 4 and len(record["dataset_sha256"]) == 64
    assert record["base_model"] == "tiny-sd.safetensors"
    assert len(record["base_model_sha256"]) == 64
    assert json.loads(meta["prompt"])["train"]["class_type"] == "TrainLoraNode"
    assert "TrainLoraNode" in {n["class_type"] for n in json.loads(meta["nodegraph"])["nodes"].values()}

    wf2 = {"ckpt": wf["ckpt"], "load": {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["ckpt", 0], "lora_name": "trained/t_4_steps_00001_.safetensors", "strength_model": 0.8}}}
    _sample(wf2, ["load", 0])
    _sample(wf2, ["ckpt", 0], node="base")
    result2, cap2 = run_captured(engine, wf2)
    result2.raise_for_status()
    assert torch.equal(cap2["ks_out"]["samples"], cap["ks_out"]["samples"])
    assert not torch.equal(cap2["base_out"]["samples"], cap["ks_out"]["samples"])


def test_same_seed_same_file_and_other_seed_differs(tiny_checkpoint, tmp_path):
    files = []
    for i, seed in enumerate((3, 3, 4)):
        config = _home(tiny_checkpoint, tmp_path / f"h{i}")
        wf = _train_graph(steps=3, seed=seed)
        wf["save"] = {"class_type": "SaveLoRA", "inputs": {"lora": ["train", 1], "prefix": "s"}}
        capture_engine(config).run(capture_engine(config).prepare(wf)).raise_for_status()
        (path,) = config.model_dir("loras").glob("s_*.safetensors")
        with safe_open(str(path), "pt") as f:
            files.append({k: f.get_tensor(k) for k in f.keys()})
    assert files[0].keys() == files[1].keys()
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    assert any(not torch.equal(files[0][k], files[2][k]) for k in files[0] if k.endswith("down.weight"))


def test_interrupt_keeps_a_usable_lora_and_training_resumes_from_it(tiny_checkpoint, tmp_path):
    config = _home(tiny_checkpoint, tmp_path)
    engine = capture_engine(config)
    flag, bus = InterruptFlag(), EventBus()

    def stop_at_three(event):
        if isinstance(event, NodeProgress) and event.node_id == "train" and event.value >= 3:
            flag.set()

    bus.subscribe(stop_at_three)
    result, _ = run_captured(engine, _train_graph(steps=50), bus=bus, interrupt=flag)
    assert result.status == "interrupted"
    (kept,) = (config.model_dir("loras") / "interrupted").glob("*.safetensors")
    assert kept.name.startswith("trained_lora_3_steps_")
    assert threading.active_count() >= 1

    # the kept LoRA changes the model like any LoRA file
    wf = {"ckpt": _train_graph()["ckpt"], "load": {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["ckpt", 0], "lora_name": f"interrupted/{kept.name}", "strength_model": 1.0}}}
    _sample(wf, ["load", 0])
    _sample(wf, ["ckpt", 0], node="base")
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    assert not torch.equal(cap["ks_out"]["samples"], cap["base_out"]["samples"])

    # and training goes on from it: the step count continues
    result, cap = run_captured(engine, _train_graph(steps=2, existing=f"interrupted/{kept.name}"))
    result.raise_for_status()
    assert cap["steps"] == 5 and len(cap["loss"]["loss"]) == 2
