"""ComfyUI's flux_dev_example (UNETLoader, DualCLIPLoader, ModelSamplingFlux, BasicScheduler, BasicGuider,
KSamplerSelect, RandomNoise, SamplerCustomAdvanced) runs on the tiny Flux saved under the example's file names,
once the custom-sampling engine dispatches flow models to ``nodegraph.diffusion.flow.custom``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


from nodegraph.config import EngineConfig
from nodegraph.engine import Engine

EXAMPLE = Path(__file__).parent / "flux_examples" / "flux_dev_example.json"


def test_flux_dev_example_runs_on_the_tiny_model(tiny_flux, tmp_path):
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    home = tmp_path / "home"
    shutil.copytree(tiny_flux.home, home)
    models = home / "models"
    renames = {}
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "UNETLoader":
            renames[models / "diffusion_models" / "flux1-tiny-comfyui.safetensors"] = \
                models / "diffusion_models" / inputs["unet_name"]
        if node["class_type"] == "DualCLIPLoader":
            for key, ours in (("clip_name1", "t5xxl_fp16.safetensors"), ("clip_name2", "clip_l.safetensors")):
                renames[models / "text_encoders" / ours] = models / "text_encoders" / inputs[key]
        if node["class_type"] == "VAELoader":
            renames[models / "vae" / "ae.safetensors"] = models / "vae" / inputs["vae_name"]
        if node["class_type"] in ("EmptySD3LatentImage", "ModelSamplingFlux"):
            inputs.update(width=64, height=64)
        if node["class_type"] == "BasicScheduler":
            inputs.update(steps=2)
    for src, dst in renames.items():
        if src != dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    engine = Engine(EngineConfig(home=home, output_dir=tmp_path / "out"))
    engine.run(engine.prepare(prompt)).raise_for_status()
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1
