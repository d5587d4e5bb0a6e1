"""ComfyUI's flux_dev_example (UNETLoader, DualCLIPLoader, ModelSamplingFlux, BasicScheduler, BasicGuider,
KSamplerSelect, RandomNoise, SamplerCustomAdvanced) runs on the tiny Flux saved under the example's file names,
once the custom-sampling engine dispatches flow models to ``nodegraph.diffusion.flow.custom``."""

from __future__ import annotations

import shutil
from pathlib import Path

import family_kit as kit

EXAMPLE = Path(__file__).parent / "flux_examples" / "flux_dev_example.json"


def test_flux_dev_example_runs_on_the_tiny_model(tiny_flux, tmp_path):
    prompt = kit.load_example(EXAMPLE)
    home = tmp_path / "home"
    shutil.copytree(tiny_flux.home, home)
    models = home / "models"
    renames = {}

    def unet(inputs: dict) -> None:
        renames[models / "diffusion_models" / "flux1-tiny-comfyui.safetensors"] = \
            models / "diffusion_models" / inputs["unet_name"]

    def clips(inputs: dict) -> None:
        for key, ours in (("clip_name1", "t5xxl_fp16.safetensors"), ("clip_name2", "clip_l.safetensors")):
            renames[models / "text_encoders" / ours] = models / "text_encoders" / inputs[key]

    def vae(inputs: dict) -> None:
        renames[models / "vae" / "ae.safetensors"] = models / "vae" / inputs["vae_name"]

    kit.shrink(prompt, {"UNETLoader": unet, "DualCLIPLoader": clips, "VAELoader": vae,
                    "EmptySD3LatentImage": {"width": 64, "height": 64},
                    "ModelSamplingFlux": {"width": 64, "height": 64},
                    "BasicScheduler": {"steps": 2}})
    for src, dst in renames.items():
        if src != dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    kit.run_example(home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))
