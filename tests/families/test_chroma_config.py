"""The shipped Chroma config builds (meta device) a transformer of the published size (Chroma1-HD: 8.9B)."""

from __future__ import annotations

import torch

from nodegraph.diffusion.flow.chroma import chroma_config


def test_transformer_parameter_count():
    from diffusers import ChromaTransformer2DModel

    with torch.device("meta"):
        model = ChromaTransformer2DModel.from_config(chroma_config())
    assert sum(p.numel() for p in model.parameters()) == 8_899_983_424
