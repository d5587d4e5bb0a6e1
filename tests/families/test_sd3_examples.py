"""ComfyUI_examples' SD3/SD3.5 workflows (prompts extracted from the PNGs of the sd3 folder into sd3_examples/): they
validate with only the model files missing, and the SD3.5 examples run on the tiny SD3.5 saved under the examples'
file names (at 64×64 and 2 steps, to stay fast)."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
from sd3_tiny import CHECKPOINT, build

EXAMPLES = sorted((Path(__file__).parent / "sd3_examples").glob("*.json"))
FILE_INPUTS = {"clip_name", "clip_name1", "clip_name2", "clip_name3", "ckpt_name", "control_net_name", "image"}


def test_examples_validate_but_for_missing_files(tmp_path):
    checked, _, _ = kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path, skip_absent=True)
    assert {"sd3.5_simple_example", "sd3.5_text_encoders_example", "sd3_simple_example",
            "sd3_text_encoders_example", "sd3_anime_example"} <= set(checked)


@pytest.mark.parametrize("example", ["sd3.5_simple_example", "sd3.5_text_encoders_example"])
def test_example_runs_on_the_tiny_model(tmp_path, example):
    tiny = build(tmp_path / "home")
    kit.copy_as(tiny.home / "models" / "checkpoints", CHECKPOINT, "sd3.5_large_fp8_scaled.safetensors")
    prompt = kit.shrink(kit.load_example(Path(__file__).parent / "sd3_examples" / f"{example}.json"),
                    {"EmptySD3LatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))
