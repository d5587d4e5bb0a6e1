"""ComfyUI_examples' Wan 2.2 TI2V-5B workflows (``wan_examples/text_to_video_wan22_5B.json`` and
``wan22_examples/image_to_video_wan22_5B.json``, from comfyanonymous/ComfyUI_examples at f9431bb) validate with
only the model files (and the start image) missing, and run on the tiny 5B saved under the examples' file names
(64×64, 5 frames, 2 uni_pc steps) to their SaveAnimatedWEBP and SaveWEBM outputs: text to video, and text-image to
video from the example's LoadImage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from wan22_tiny import LAYOUTS_5B, VAE22_FILES, build22
from wan_tiny import TEXT

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.ui_format import ui_to_api
from nodegraph.validation import ValidationReport

HERE = Path(__file__).parent
EXAMPLES = {"t2v": HERE / "wan_examples" / "text_to_video_wan22_5B.json",
            "i2v": HERE / "wan22_examples" / "image_to_video_wan22_5B.json"}
START = "fennec_girl_hug.png"
FILES = {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors", "vae_name": "wan2.2_vae.safetensors",
         "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors"}


def _api(engine: Engine, name: str) -> dict:
    return ui_to_api(json.loads(EXAMPLES[name].read_text(encoding="utf-8")), engine.registry)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_names_the_files_and_validates_but_for_them(tmp_path, name):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = _api(engine, name)
    named = {k: v for node in prompt.values() for k, v in node["inputs"].items() if k in FILES}
    assert named == FILES
    with pytest.raises(ValidationReport) as info:
        engine.prepare(prompt)
    missing = set()
    for entry in info.value.node_errors.values():
        for error in entry["errors"]:
            assert error["type"] == "value_not_in_list", error
            missing.add(error["extra_info"]["input_name"])
    assert missing == set(FILES) | ({"image"} if name == "i2v" else set())


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tiny = build22(tmp_path_factory.mktemp("wan22-5b-examples"))
    models = tiny.home / "models"
    shutil.copy(models / "diffusion_models" / LAYOUTS_5B["comfyui"], models / "diffusion_models" / FILES["unet_name"])
    shutil.copy(models / "text_encoders" / TEXT, models / "text_encoders" / FILES["clip_name"])
    assert VAE22_FILES["comfyui"] == FILES["vae_name"]
    (tiny.home / "input").mkdir(exist_ok=True)
    image = (np.random.default_rng(8).random((80, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tiny.home / "input" / START)
    return tiny.home


def _shrink(prompt: dict) -> dict:
    for node in prompt.values():
        if node["class_type"] == "Wan22ImageToVideoLatent":
            node["inputs"].update(width=64, height=64, length=5)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    return prompt


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_on_the_tiny_5b(home, tmp_path, name):
    engine = Engine(EngineConfig(home=home, output_dir=tmp_path / "out"))
    prompt = _shrink(_api(engine, name))
    latent = next(n for n in prompt.values() if n["class_type"] == "Wan22ImageToVideoLatent")
    assert ("start_image" in latent["inputs"]) == (name == "i2v")
    engine.run(engine.prepare(prompt)).raise_for_status()
    outputs = sorted(p.suffix for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert outputs == [".webm", ".webp"], outputs
    webp = next((tmp_path / "out").rglob("*.webp"))
    with Image.open(webp) as im:
        assert im.size == (64, 64) and getattr(im, "n_frames", 1) == 5


def test_shipped_configs_have_the_published_sizes(monkeypatch):
    """TI2V-5B: 5.0 B parameters (Wan-AI's "5B"); the Wan 2.2 VAE: 704.7 M (ComfyUI's 1.41 GB fp16 file)."""
    from nodegraph.diffusion.video_models import wan_files

    monkeypatch.setattr(wan_files, "CONFIG_NAMES", ("transformer_wan2.2_ti2v_5B", "vae_wan2.2"))
    counts = wan_files.parameter_counts()
    assert counts == {"transformer_wan2.2_ti2v_5B": 4_999_787_712, "vae_wan2.2": 704_688_668}
