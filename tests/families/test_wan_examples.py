"""ComfyUI_examples' Wan 2.1 / 2.2 workflows (editor format, copied into wan_examples/ from
comfyanonymous/ComfyUI_examples at f9431bb0): they validate with only the model files missing, and the Wan 2.1
text-to-video example runs (uni_pc, SaveAnimatedWEBP; SaveWEBM where not bypassed) on the tiny Wan saved under the example's file
names, at 32×32, 5 frames and 2 steps; the Wan 2.2 14B example's two experts (KSamplerAdvanced step ranges) run too."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
from wan_tiny import LAYOUTS, TEXT, VAE_FILES, build

HERE = Path(__file__).parent / "wan_examples"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "clip_name1", "image"}
#: The examples whose classes are all here (the 5B model needs Wan22ImageToVideoLatent and the Wan 2.2 VAE).
RUNNABLE = {"text_to_video_wan", "image_to_video_wan_example", "text_to_video_wan22_14B", "image_to_video_wan22_14B"}


def test_examples_validate_but_for_missing_files(tmp_path):
    """The model files (and the start image) are missing here."""
    checked, _, _ = kit.validate_examples(sorted(HERE.glob("*.json")), FILE_INPUTS, tmp_path, skip_absent=True)
    assert RUNNABLE <= set(checked)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The tiny Wan under the file names of the examples (both 2.2 experts: the same tiny transformer)."""
    tiny = build(tmp_path_factory.mktemp("wan-examples-home"))
    models = tiny.home / "models"
    kit.copy_as(models / "diffusion_models", LAYOUTS["comfyui"], "wan2.1_t2v_1.3B_fp16.safetensors",
            "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors")
    kit.copy_as(models / "text_encoders", TEXT, "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    assert (models / "vae" / VAE_FILES["comfyui"]).name == "wan_2.1_vae.safetensors"
    return tiny.home


def _shrink(prompt: dict, steps: int) -> dict:
    def advanced(inputs: dict) -> None:
        inputs.update(steps=steps, end_at_step=min(inputs["end_at_step"], steps),
                      start_at_step=min(inputs["start_at_step"], steps // 2))

    return kit.shrink(prompt, {"EmptyHunyuanLatentVideo": {"width": 32, "height": 32, "length": 5},
                           "KSampler": {"steps": steps}, "KSamplerAdvanced": advanced})


@pytest.mark.parametrize("name", ["text_to_video_wan", "text_to_video_wan22_14B"])
def test_text_to_video_example_runs_on_the_tiny_model(home, tmp_path, name):
    files = kit.run_example(home, tmp_path / "out", lambda engine: _shrink(
        kit.load_example(HERE / f"{name}.json", engine.registry), 2 if name == "text_to_video_wan" else 4))
    outputs = sorted(p.suffix for p in files)
    # SaveWEBM is bypassed (mode 4) in the Wan 2.1 example, active in the Wan 2.2 one
    assert outputs == ([".webp"] if name == "text_to_video_wan" else [".webm", ".webp"]), outputs
    kit.assert_animation(next(p for p in files if p.suffix == ".webp"), (32, 32), 5)
