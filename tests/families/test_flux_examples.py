"""ComfyUI_examples' Flux workflows (prompts extracted from the PNGs of the flux folder into flux_examples/):
they validate with only the model files missing, and the all-in-one checkpoint example runs on the tiny Flux
saved under the example's file name (at 64×64 and 2 steps, to stay fast)."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit

EXAMPLES = sorted((Path(__file__).parent / "flux_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "ckpt_name", "lora_name",
               "control_net_name", "style_model_name", "image"}

#: Required inputs ComfyUI added after the Redux example was saved (its editor workflow gets their defaults).
NEWER_INPUTS = {("CLIPVisionEncode", "crop"), ("StyleModelApply", "strength"), ("StyleModelApply", "strength_type")}


def _saved_before_newer_inputs(stem: str, class_type: str, error: dict) -> bool:
    """Saved before ComfyUI added the input: ComfyUI refuses this API prompt too."""
    return error["type"] == "required_input_missing" and \
        (class_type, error["extra_info"].get("input_name")) in NEWER_INPUTS


def test_examples_validate_but_for_missing_files(tmp_path):
    checked, _, _ = kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path, skip_absent=True,
                                      allow=_saved_before_newer_inputs)
    assert {"flux_dev_checkpoint_example", "flux_schnell_checkpoint_example", "flux_dev_example"} <= set(checked)


def test_checkpoint_example_runs_on_the_tiny_model(tiny_flux, tmp_path):
    prompt = kit.shrink(kit.load_example(Path(__file__).parent / "flux_examples" / "flux_dev_checkpoint_example.json"),
                    {"EmptySD3LatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    kit.run_example(tiny_flux.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))
