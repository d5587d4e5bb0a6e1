"""The shipped HiDream configs have the published sizes (counted on the meta device) and detection reads them back
from the tensor shapes of a full-size transformer and Llama file (headers only, no weights)."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit

from nodegraph.diffusion.detect import Header
from nodegraph.diffusion.hidream.detect import (
    is_llama,
    llama_config,
    shipped_config,
    transformer_config,
    transformer_prefix,
)

#: HiDream-I1's transformer: "17B" published; Llama-3.1-8B-Instruct with its head: "8B" published.
TRANSFORMER_PARAMS = 17_105_733_184
LLAMA_PARAMS = 8_030_261_248


def _shapes(model, prefix: str = "") -> dict:
    return {prefix + k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_transformer_config_is_17b_and_detected_from_comfyui_names():
    from diffusers import HiDreamImageTransformer2DModel

    config = shipped_config("transformer")
    model = kit.on_meta(lambda: HiDreamImageTransformer2DModel.from_config(config))
    assert kit.parameter_count(model) == TRANSFORMER_PARAMS
    shapes = _shapes(model, "model.diffusion_model.")
    prefix = transformer_prefix(shapes)
    assert prefix == "model.diffusion_model."
    found, _ = transformer_config(shapes, prefix)
    assert found == config
    assert transformer_prefix(_shapes(model)) == ""


def test_llama_config_is_8b_and_detected_from_its_shapes():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = shipped_config("llama")
    model = kit.on_meta(lambda: LlamaForCausalLM(LlamaConfig(**config)))
    assert kit.parameter_count(model) == LLAMA_PARAMS
    shapes = _shapes(model)
    assert is_llama(shapes) and not is_llama({**shapes, "model.layers.0.self_attn.q_proj.bias": (4096,)})
    assert llama_config(shapes) == shipped_config("llama")  # (LlamaConfig adds rope_theta to the dict it got)
    assert Header(Path("x"), shapes, {}).count("model.layers.{}.mlp.up_proj.weight") == 32
