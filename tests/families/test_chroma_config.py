"""The shipped Chroma config builds (meta device) a transformer of the published size (Chroma1-HD: 8.9B)."""

from __future__ import annotations

import family_kit as kit

from nodegraph.diffusion.flow.chroma import chroma_config


def test_transformer_parameter_count():
    from diffusers import ChromaTransformer2DModel

    model = kit.on_meta(lambda: ChromaTransformer2DModel.from_config(chroma_config()), include_buffers=True)
    assert kit.parameter_count(model) == 8_899_983_424
