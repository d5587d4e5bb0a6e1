"""The shipped Stable Cascade configs build (on the meta device) models with the published parameter counts (stage C
3.6B, stage C lite 1B, stage B 1.5B, stage B lite 700M, stage A 20M), and the config read back from full-size
tensor shapes in the original/ComfyUI names (converted by diffusers' helper) is the shipped one."""

from __future__ import annotations

import pytest
from stable_cascade_tiny import unet_to_original

from nodegraph.diffusion.stable_cascade.files import (
    derive_config,
    shipped_config,
    to_diffusers,
    unet_prefix,
)

#: exact counts of the shipped configs, and the published figures they round to
COUNTS = {"stage_c": (3_589_103_632, 3.6e9), "stage_c_lite": (1_060_805_136, 1.0e9),
          "stage_b": (1_562_941_136, 1.5e9), "stage_b_lite": (702_127_760, 0.7e9), "stage_a": (18_406_894, 20e6)}


def _meta(name: str):
    from accelerate import init_empty_weights
    from diffusers import StableCascadeUNet

    from nodegraph.diffusion.stable_cascade.vae import paella_class

    cls = paella_class() if name == "stage_a" else StableCascadeUNet
    with init_empty_weights():
        return cls.from_config(shipped_config(name))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
    count = sum(p.numel() for p in _meta(name).parameters())
    exact, published = COUNTS[name]
    print(f"\n{name}: {count:,} parameters (published {published:.3g})")
    assert count == exact
    assert abs(count - published) / published < 0.1


@pytest.mark.parametrize("name", ["stage_c", "stage_c_lite", "stage_b", "stage_b_lite"])
def test_full_size_shapes_give_the_shipped_configs(name):
    model = _meta(name)
    original = unet_to_original(dict(model.state_dict()))
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in original.items()}
    assert unet_prefix(shapes) == "model.diffusion_model."
    converted = to_diffusers(original)
    config = derive_config({k: tuple(v.shape) for k, v in converted.items()})
    assert config.pop("_release") == name
    shipped = {k: v for k, v in shipped_config(name).items() if k != "_class_name"}
    assert config == shipped
