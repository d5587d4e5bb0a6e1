"""ComfyUI_examples' LTX-Video workflows (editor format, copied into ltx_examples/ from comfyanonymous/ComfyUI_examples
at f9431bb0): they validate with only the model files (and start images) missing, and the text-to-video and
image-to-video examples (LTXVImgToVideo; LTXVAddGuide + LTXVCropGuides) run on the tiny LTX-Video saved under the
examples' file names, at 64×64, 9 frames and 2 steps (SamplerCustom + LTXVScheduler; SaveAnimatedWEBP, SaveWEBM
where not bypassed)."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
from ltx_tiny import CHECKPOINT, build

HERE = Path(__file__).parent / "ltx_examples"
FILE_INPUTS = {"ckpt_name", "clip_name", "image"}
T2V = ("ltxv_text_to_video", "ltxv_text_to_video_0.9.5")
I2V = ("ltxv_image_to_video", "ltxv_image_to_video_simple.0.9.5", "ltxv_image_to_video.0.9.5")


def test_examples_validate_but_for_missing_files(tmp_path):
    """The model files and the start images are missing here."""
    checked, skipped, _ = kit.validate_examples(sorted(HERE.glob("*.json")), FILE_INPUTS, tmp_path, skip_absent=True)
    assert set(T2V) | set(I2V) <= set(checked)
    assert skipped == []


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """The tiny LTX-Video under the examples' file names, and their start images (64×64)."""
    tiny = build(tmp_path_factory.mktemp("ltx-examples-home"))
    kit.copy_as(tiny.home / "models" / "checkpoints", CHECKPOINT, "ltx-video-2b-v0.9.safetensors",
            "ltx-video-2b-v0.9.5.safetensors")
    for name, colour in (("island.jpg", (40, 120, 200)), ("fox.jpg", (200, 90, 30)), ("sunset.png", (250, 160, 40))):
        kit.save_picture(tiny.home / "input" / name, (80, 64), colour)
    return tiny.home


def _shrink(prompt: dict) -> dict:
    size = {"width": 64, "height": 64, "length": 9}
    return kit.shrink(prompt, {"EmptyLTXVLatentVideo": size, "LTXVImgToVideo": size, "LTXVScheduler": {"steps": 2}})


@pytest.mark.parametrize("name", T2V + I2V)
def test_example_runs_on_the_tiny_model(home, tmp_path, name):
    files = kit.run_example(home, tmp_path / "out",
                        lambda engine: _shrink(kit.load_example(HERE / f"{name}.json", engine.registry)))
    assert ".webp" in {p.suffix for p in files}, files
    kit.assert_animation(next(p for p in files if p.suffix == ".webp"), (64, 64), 9)
