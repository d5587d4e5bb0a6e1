"""The shipped Flux.2 configs build (on the meta device) models with the published parameter counts, and detection
reads the same configs back from full-size tensor names and shapes (ComfyUI's/BFL's names and diffusers')."""

from __future__ import annotations

import family_kit as kit
import pytest
from flux2_tiny import to_comfyui

from nodegraph.diffusion.flux2.detect import (
    shipped_config,
    text_encoder_config,
    text_encoder_layout,
    transformer_config,
    transformer_layout,
)
from nodegraph.diffusion.flux2.loading import text_layers


@pytest.fixture(scope="module")
def transformers():
    from diffusers import Flux2Transformer2DModel

    return {name: kit.on_meta(lambda name=name: Flux2Transformer2DModel.from_config(shipped_config(name)))
            for name in ("transformer_dev", "transformer_klein_4b")}


def _language_model(name: str):
    from transformers import MistralConfig, MistralModel, Qwen3Config, Qwen3Model

    values = shipped_config(name)
    kind = values.pop("model_type")
    if kind == "mistral":
        return kit.on_meta(lambda: MistralModel(MistralConfig(**values)))
    return kit.on_meta(lambda: Qwen3Model(Qwen3Config(**values)))


def test_parameter_counts(transformers):
    """Published: FLUX.2 [dev] 32B, FLUX.2 [klein] 4B, Qwen3-4B 4.0B (tied embedding); Mistral Small 3.x is 24B
    with its vision tower and output head, of which the language model's body is 22.9B."""
    from diffusers import AutoencoderKLFlux2

    counts = {"dev": kit.parameter_count(transformers["transformer_dev"]),
              "klein_4b": kit.parameter_count(transformers["transformer_klein_4b"]),
              "vae": kit.parameter_count(kit.on_meta(lambda: AutoencoderKLFlux2.from_config(shipped_config("vae")))),
              "mistral": kit.parameter_count(_language_model("text_encoder_mistral3_24b")),
              "qwen3": kit.parameter_count(_language_model("text_encoder_qwen3_4b"))}
    print(f"\nFlux.2 parameters: {counts}")
    assert counts == {"dev": 32_223_281_152, "klein_4b": 3_875_544_576, "vae": 84_046_115,
                      "mistral": 22_901_314_560, "qwen3": 4_022_468_096}
    assert abs(counts["dev"] / 32e9 - 1) < 0.01 and abs(counts["klein_4b"] / 4e9 - 1) < 0.04
    mistral_with_head = counts["mistral"] + 131_072 * 5120
    assert 23.5e9 < mistral_with_head < 24e9  # + the ~0.4B vision tower = Mistral Small 3.x's 24B


@pytest.mark.parametrize("name", ["transformer_dev", "transformer_klein_4b"])
def test_full_size_shapes_give_the_shipped_configs(transformers, name):
    state = transformers[name].state_dict()  # meta tensors: names and shapes only
    diffusers = {k: tuple(v.shape) for k, v in state.items()}
    comfyui = {"model.diffusion_model." + k: tuple(v.shape) for k, v in to_comfyui(state).items()}
    shipped = shipped_config(name)
    shipped["axes_dims_rope"] = list(shipped["axes_dims_rope"])
    for shapes, want in ((diffusers, ("", "diffusers")),
                         (comfyui, ("model.diffusion_model.", "comfyui"))):
        assert transformer_layout(shapes) == want
        config, (variant, *_) = transformer_config(shapes, *want)
        assert {k: config[k] for k in shipped} == shipped
        assert variant == ("dev" if shipped["guidance_embeds"] else "klein")


def test_text_encoder_shapes_give_the_shipped_configs():
    for name, arch in (("text_encoder_mistral3_24b", "mistral"), ("text_encoder_qwen3_4b", "qwen3")):
        shapes = {"model." + k: tuple(v.shape) for k, v in _language_model(name).state_dict().items()}
        assert text_encoder_layout(shapes) == ("model.", arch)
        got, want = text_encoder_config(shapes, "model.", arch), shipped_config(name)
        want.pop("model_type")
        assert got == want
    assert text_layers("mistral", 40) == text_layers("mistral", 30) == (10, 20, 30)  # ComfyUI's pruned file: 30
    assert text_layers("qwen3", 36) == (9, 18, 27) and text_layers("mistral", 4) == (1, 2, 3)
