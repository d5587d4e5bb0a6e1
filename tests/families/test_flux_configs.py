"""The shipped Flux.1 configs build (meta device, no weights) models with the published parameter counts, and
the schedule/detection helpers follow ComfyUI's and diffusers' definitions."""

from __future__ import annotations

import json

import family_kit as kit
import numpy as np
import pytest

from nodegraph.diffusion.flow.detect import FLUX_CONFIGS, _rope_axes

#: Published parameter counts: FLUX.1-dev / schnell transformer, T5-XXL v1.1 encoder, CLIP ViT-L/14 text model and
#: the FLUX.1 autoencoder, as diffusers/transformers count them.
PUBLISHED = {"dev": 11_901_408_320, "schnell": 11_891_178_560, "t5xxl": 4_762_310_656, "clip_l": 123_060_480,
             "vae": 83_819_683}


def _config(name: str) -> dict:
    return json.loads((FLUX_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_transformer_parameter_count(variant):
    from diffusers import FluxTransformer2DModel

    config = dict(_config("transformer"), guidance_embeds=variant == "dev")
    assert kit.parameter_count(kit.on_meta(lambda: FluxTransformer2DModel.from_config(config))) == PUBLISHED[variant]


def test_text_encoder_and_vae_parameter_counts():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5 = kit.on_meta(lambda: T5EncoderModel(T5Config(**_config("t5xxl"))))
    clip = kit.on_meta(lambda: CLIPTextModel(CLIPTextConfig(**_config("clip_l"))))
    vae = kit.on_meta(lambda: AutoencoderKL.from_config(_config("vae")))
    t5.tie_weights()
    assert (kit.parameter_count(t5), kit.parameter_count(clip), kit.parameter_count(vae)) == \
        (PUBLISHED["t5xxl"], PUBLISHED["clip_l"], PUBLISHED["vae"])


def test_rope_axes_keep_flux_proportions():
    assert _rope_axes(128) == [16, 56, 56]
    assert sum(_rope_axes(32)) == 32 and all(a % 2 == 0 for a in _rope_axes(32))


def test_simple_schedule_equals_diffusers_dynamic_shift():
    """ModelSamplingFlux + simple = FluxPipeline's sigmas (linspace, exponential time shift by mu)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas, flux_shift

    for size, steps in ((1024, 20), (512, 4), (768, 28)):
        mu = calculate_shift((size // 16) ** 2, 256, 4096, 0.5, 1.15)
        assert flux_shift(size, size) == pytest.approx(mu)
        ours = flow_sigmas("simple", steps, FlowSettings("flux", mu))
        base = np.linspace(1.0, 1 / steps, steps)
        theirs = np.exp(mu) / (np.exp(mu) + (1 / base - 1))
        # ComfyUI picks table entries (t = k/10000): equal to 1e-6 when steps divide 10000, else to ~1e-4
        assert np.allclose(ours[:-1], theirs, atol=1e-6 if 10000 % steps == 0 else 3e-4) and ours[-1] == 0.0


def test_every_scheduler_gives_descending_sigmas():
    from nodegraph.diffusion.flow.schedule import (
        FLOW_SCHEDULES,
        FlowSettings,
        flow_sigmas,
    )

    for kind in ("flux", "discrete"):
        for name in FLOW_SCHEDULES:
            sig = flow_sigmas(name, 9, FlowSettings(kind, 3.0))
            assert sig[-1] == 0.0 and np.all(np.diff(sig) <= 0) and sig[0] <= 1.0 + 1e-6, (kind, name, sig)
    with pytest.raises(ValueError, match="does not apply to flow"):
        flow_sigmas("nonsense", 4, FlowSettings())
