"""The shipped SD3.5 configs build (meta device, no weights) models with the published sizes, config detection reads
real-shaped files, and ModelSamplingSD3's schedule equals diffusers' shifted flow-matching sigmas."""

from __future__ import annotations

import family_kit as kit
import numpy as np
import pytest

from nodegraph.diffusion.flow.sd3 import config_from_shapes, sd3_config

#: Parameters (weights + the position-embedding table, which the released files carry) as diffusers counts them:
#: SD3.5 Large "8.1B", SD3.5 Medium "2.5B" (Stability's model cards), OpenCLIP ViT-bigG/14's text tower with its
#: projection, the 16-channel SD3 autoencoder.
PUBLISHED = {"transformer_large": 8_146_280_768, "transformer_medium": 2_469_663_936, "clip_g": 694_659_840,
             "vae": 83_819_683}


def _count(model) -> int:
    return kit.parameter_count(model) + sum(b.numel() for n, b in model.named_buffers() if n.endswith("pos_embed"))


@pytest.mark.parametrize("name", ["transformer_large", "transformer_medium"])
def test_transformer_sizes(name):
    from diffusers import SD3Transformer2DModel

    model = kit.on_meta(lambda: SD3Transformer2DModel.from_config(sd3_config(name)), include_buffers=True)
    assert _count(model) == PUBLISHED[name]
    assert round(_count(model) / 1e9, 1) == (8.1 if name.endswith("large") else 2.5)


def test_clip_g_and_vae_sizes():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    clip_g = kit.on_meta(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**sd3_config("clip_g"))), True)
    vae = kit.on_meta(lambda: AutoencoderKL.from_config(sd3_config("vae")), True)
    assert (_count(clip_g), _count(vae)) == (PUBLISHED["clip_g"], PUBLISHED["vae"])
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (1.5305, 0.0609)


@pytest.mark.parametrize("name", ["transformer_large", "transformer_medium"])
def test_config_detected_from_real_shapes(name):
    """The shapes of a full-size file (diffusers' names and Stability's) give back the shipped config."""
    from diffusers import SD3Transformer2DModel
    from sd3_shapes import original_shapes

    config = sd3_config(name)
    model = kit.on_meta(lambda: SD3Transformer2DModel.from_config(config), include_buffers=True)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    for original, s in ((False, shapes), (True, original_shapes(shapes))):
        found, reasons = config_from_shapes(s, "", original)
        assert {k: found[k] for k in config if not k.startswith("_")} == \
            {k: config[k] for k in config if not k.startswith("_")}, (name, original)
        assert ("MMDiT-X" in reasons[-1]) == name.endswith("medium")


def test_simple_schedule_equals_diffusers_shifted_sigmas():
    """ModelSamplingSD3(shift) + simple = FlowMatchEulerDiscreteScheduler(shift) on linear sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas

    for shift, steps in ((3.0, 20), (6.0, 4), (3.0, 8)):  # steps dividing 1000: ComfyUI picks whole table rows
        ours = flow_sigmas("simple", steps, FlowSettings("discrete", shift, 1000.0))
        sched = FlowMatchEulerDiscreteScheduler(shift=shift)
        sched.set_timesteps(sigmas=list(np.linspace(1.0, 1.0 / steps, steps)))
        assert np.allclose(ours, sched.sigmas.numpy(), atol=1e-6)


def test_skip_layer_percent_to_sigma():
    from nodegraph.diffusion.flow.schedule import FlowSettings

    flow = FlowSettings("discrete", 3.0, 1000.0)
    assert flow.percent_to_sigma(0.0) == 1.0 and flow.percent_to_sigma(1.0) == 0.0
    assert flow.percent_to_sigma(0.5) == pytest.approx(0.75)  # 3 · 0.5 / (1 + 2 · 0.5)
