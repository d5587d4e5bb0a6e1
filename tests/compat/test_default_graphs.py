"""The editor's own default graphs (ComfyUI 2023 and frontend 1.58.1) convert as ComfyUI converts them, and run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.ui_format import ui_to_api
from nodegraph.validation import ValidationReport

GRAPHS = Path(__file__).parent / "default_graphs"
EMBEDDED = "nodegraph-shapes-v1"


def load(name: str) -> dict[str, Any]:
    """A default graph from default_graphs/."""
    return json.loads((GRAPHS / name).read_text(encoding="utf-8"))


def set_widgets(ui: dict[str, Any], kind: str, values: list[Any]) -> None:
    """Replace the widgets_values of every node of class ``kind``."""
    for node in ui["nodes"]:
        if node["type"] == kind:
            node["widgets_values"] = values


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """An engine on a fresh home: the embedded model is its only checkpoint."""
    return Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))


def test_comfyui_2023_default_converts(engine):
    api = ui_to_api(load("comfyui_2023.json"), engine.registry)
    # The seed's control value was saved as the boolean true: it still takes the control slot.
    assert api["3"]["inputs"] == {"seed": 8566257, "steps": 20, "cfg": 8, "sampler_name": "euler",
                                  "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
                                  "negative": ["7", 0], "latent_image": ["5", 0]}
    # SaveImage was saved without widgets_values: its input takes the default.
    assert api["9"]["inputs"]["images"] == ["8", 0]
    assert api["9"]["inputs"]["filename_prefix"] == "ComfyUI"  # ComfyUI's default, as its own API form has it
    assert {k: v["class_type"] for k, v in api.items()} == {
        "3": "KSampler", "4": "CheckpointLoaderSimple", "5": "EmptyLatentImage", "6": "CLIPTextEncode",
        "7": "CLIPTextEncode", "8": "VAEDecode", "9": "SaveImage"}


def test_comfyui_2023_default_validates_on_the_embedded_model(engine):
    ui = load("comfyui_2023.json")
    set_widgets(ui, "CheckpointLoaderSimple", [EMBEDDED])
    prompt = engine.prepare(ui)
    assert set(prompt.raw) == {"3", "4", "5", "6", "7", "8", "9"}


@pytest.mark.slow
def test_comfyui_2023_default_runs_on_the_embedded_model(engine):
    ui = load("comfyui_2023.json")
    set_widgets(ui, "CheckpointLoaderSimple", [EMBEDDED])
    set_widgets(ui, "EmptyLatentImage", [64, 64, 1])  # small and quick; the graph is otherwise as shipped
    set_widgets(ui, "KSampler", [8566257, True, 2, 8, "euler", "normal", 1])
    result = engine.run(engine.prepare(ui))
    assert not getattr(result, "error", None), result.error
    (image,) = result.outputs["9"]["images"]
    assert (engine.config.output_dir / image["filename"]).is_file()


def test_frontend_default_converts(engine):
    ui = load("frontend_1.58.1.json")
    api = ui_to_api(copy.deepcopy(ui), engine.registry)
    assert api["70"] == {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 8, "cfg": 1, "sampler_name": "res_multistep", "scheduler": "simple", "denoise": 1,
        "model": ["69", 0], "positive": ["67", 0], "negative": ["71", 0], "latent_image": ["68", 0]}}
    assert api["9"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["65", 0]}
    assert api["65"]["inputs"] == {"samples": ["70", 0], "vae": ["63", 0]}
    assert api["67"]["inputs"]["clip"] == ["62", 0] and api["71"]["inputs"]["clip"] == ["62", 0]
    assert set(api) == {str(n["id"]) for n in ui["nodes"]}


def test_frontend_default_fails_only_for_missing_model_files(engine):
    """The Z-Image graph (UNETLoader, CLIPLoader lumina2, ModelSamplingAuraFlow, EmptySD3LatentImage, KSampler
    res_multistep) validates but for its three model files, which this machine lacks."""
    with pytest.raises(ValidationReport) as info:
        engine.prepare(load("frontend_1.58.1.json"))
    missing = set()
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            name = error["extra_info"].get("input_name")
            assert error["type"] == "value_not_in_list" and name in ("vae_name", "unet_name", "clip_name"), \
                (node_id, error)
            missing.add(name)
    assert missing == {"vae_name", "unet_name", "clip_name"}


@pytest.mark.slow
def test_frontend_default_runs_on_tiny_z_image_files(tmp_path):
    """With tiny random-weight Z-Image files saved under its three file names (and a Qwen3 tokenizer folder beside
    the text encoder), the frontend's default graph runs as shipped: res_multistep/simple, cfg 1, shift 3."""
    import importlib.util

    helper = Path(__file__).resolve().parents[1] / "families" / "lumina_tiny.py"
    spec = importlib.util.spec_from_file_location("lumina_tiny", helper)
    lumina_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lumina_tiny)
    tiny = lumina_tiny.build(tmp_path / "home")
    engine = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    ui = load("frontend_1.58.1.json")
    set_widgets(ui, "EmptySD3LatentImage", [64, 64, 1])  # small and quick; the graph is otherwise as shipped
    set_widgets(ui, "KSampler", [42, "fixed", 2, 1, "res_multistep", "simple", 1])
    result = engine.run(engine.prepare(ui))
    assert not getattr(result, "error", None), result.error
    (image,) = result.outputs["9"]["images"]
    assert (engine.config.output_dir / image["filename"]).is_file()
