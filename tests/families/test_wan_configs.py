"""The shipped Wan configs build on the meta device with the parameter counts the README states, and the loader's
config-from-shapes recovers a shipped config from its own (meta) tensors."""

from __future__ import annotations

import family_kit as kit
import pytest

from nodegraph.diffusion.video_models import wan_files

#: Parameters of the shipped configs (configs/wan/README.md).
COUNTS = {"transformer_wan2.1_t2v_1.3B": 1_418_996_800, "vae_wan2.1": 126_892_531}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name, monkeypatch):
    monkeypatch.setattr(wan_files, "CONFIG_NAMES", (name,))
    assert wan_files.parameter_counts() == {name: COUNTS[name]}


@pytest.mark.parametrize("name", ["transformer_wan2.1_t2v_1.3B", "transformer_wan2.1_i2v_14B",
                                  "transformer_wan2.2_i2v_a14b", "transformer_wan2.2_ti2v_5B"])
def test_config_from_shapes_recovers_the_shipped_config(name):
    from diffusers import WanTransformer3DModel

    cfg = wan_files.shipped_config(name)
    model = kit.on_meta(lambda: WanTransformer3DModel.from_config(cfg))
    got = wan_files.config_from_state(dict(model.state_dict()))
    assert {k: got[k] for k in cfg} == {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    assert wan_files.variant(got) == {"transformer_wan2.1_t2v_1.3B": "wan2.1-t2v", "transformer_wan2.1_i2v_14B":
                                      "wan2.1-i2v", "transformer_wan2.2_i2v_a14b": "wan2.2-i2v",
                                      "transformer_wan2.2_ti2v_5B": "wan2.2-ti2v-5b"}[name]
