"""The shipped Qwen-Image configs build (on the meta device) models with the published parameter counts, and the
detection reads the same configs back from full-size tensor names and shapes (ComfyUI's names)."""

from __future__ import annotations

import family_kit as kit
import pytest

from nodegraph.diffusion.qwen.detect import (
    shipped_config,
    text_encoder_config,
    text_encoder_layout,
    transformer_config,
    transformer_prefix,
)


@pytest.fixture(scope="module")
def transformer():
    from diffusers import QwenImageTransformer2DModel

    return kit.on_meta(lambda: QwenImageTransformer2DModel.from_config(shipped_config("transformer")))


@pytest.fixture(scope="module")
def text_encoder():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return kit.on_meta(lambda: Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**shipped_config("text_encoder"))))


def test_parameter_counts(transformer, text_encoder):
    from diffusers import AutoencoderKLQwenImage

    vae = kit.on_meta(lambda: AutoencoderKLQwenImage.from_config(shipped_config("vae")))
    counts = {"transformer": kit.parameter_count(transformer), "text_encoder": kit.parameter_count(text_encoder),
              "vae": kit.parameter_count(vae)}
    print(f"\nQwen-Image parameters: {counts}")
    assert counts == {"transformer": 20_430_401_088, "text_encoder": 8_292_166_656, "vae": 126_892_531}


def test_full_size_shapes_give_the_shipped_configs(transformer, text_encoder):
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    prefix = transformer_prefix(shapes)
    assert prefix == "model.diffusion_model."
    config, _ = transformer_config(shapes, prefix)
    shipped = shipped_config("transformer")
    assert {k: config[k] for k in shipped} == shipped
    comfy = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): tuple(v.shape)
             for k, v in text_encoder.state_dict().items()}
    layout = text_encoder_layout(comfy)
    assert layout == ("model.", "visual.")
    got, want = text_encoder_config(comfy, *layout), shipped_config("text_encoder")
    assert all(got["text_config"][k] == v for k, v in want["text_config"].items())
    assert got["vision_config"] == want["vision_config"]
