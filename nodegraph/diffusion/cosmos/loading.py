"""Loading Cosmos Predict2 offline: the diffusion transformer (UNETLoader) and its old T5-XXL text encoder
(CLIPLoader type ``cosmos``).

Weights go into models built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``).
NVIDIA's/ComfyUI's tensor names are renamed with diffusers' own converter
(``convert_cosmos_transformer_checkpoint_to_diffusers``). The text encoder is T5 v1.0 XXL's encoder (1024 wide,
ReLU feed-forward: ComfyUI's ``oldt5_xxl``), tokenized with the shipped T5 vocabulary (``flow.loading.t5_tokenizer``:
T5 v1.0 and v1.1 share it) unless a ``t5_tokenizer`` folder lies beside the file; ComfyUI's "fp8_scaled" files load
as weights × scales. The VAE is Wan 2.1's (``video_models.wan_vae``, VAELoader). As in ComfyUI's CLIPLoader, a
Pile-T5-XL file (AuraFlow's) given to type ``cosmos`` loads as AuraFlow's text encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, LatentFormat, TextEncoder
from .detect import transformer_config, transformer_layout
from .sampling import CosmosFlow

log = logging.getLogger(__name__)

#: Cosmos Predict2's latent space as the MODEL sees it: Wan 2.1's VAE, normalised per channel by the VAE wrapper.
COSMOS_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=1.0, shift_factor=0.0)
#: Noise-free original tensors the converter drops (training counters, fixed rotary ranges).
_DROPPED = ("accum_", "pos_embedder.", "_extra_state", "logvar")


def is_cosmos_transformer(header: Header) -> bool:
    """Whether a diffusion-model file holds a Cosmos Predict2 transformer."""
    return transformer_layout(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], shapes: dict[str, Any], name: str,
                           weight_dtype: str = "default", dtype: Any = None) -> DiffusionModel:
    """MODEL from a Cosmos Predict2 transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import CosmosTransformer3DModel
    from diffusers.loaders.single_file_utils import (
        convert_cosmos_transformer_checkpoint_to_diffusers,
    )

    from ..flow.loading import filled_model
    from ..fp8 import unscale_fp8

    found = transformer_layout(shapes)
    if found is None:
        raise UnknownModelError(f"{name} holds no Cosmos Predict2 transformer")
    prefix, layout = found
    config, reasons = transformer_config(shapes, prefix, layout)
    log.info("%s: cosmos predict2: %s", name, "; ".join(reasons))
    state = strip_prefix(state, prefix)
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    if layout == "original":
        state = {k: v for k, v in state.items() if not k.startswith(_DROPPED) and "_extra_state" not in k}
        state = convert_cosmos_transformer_checkpoint_to_diffusers(state)
    variant = "cosmos-predict2-v2w" if config["in_channels"] == 17 else "cosmos-predict2-t2i"
    if config.get("concat_padding_mask", True):  # the zero padding-mask channel is appended by CosmosDenoiser,
        # so diffusers' resize of it (which needs torchvision) is not used: same weights, one more input channel
        config = dict(config, concat_padding_mask=False, in_channels=int(config["in_channels"]) + 1)
    transformer = filled_model(CosmosTransformer3DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=variant, source=name, latent=COSMOS_LATENT,
                          family="cosmos", flow=CosmosFlow())


def load_cosmos_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                            dtype: Any = None) -> DiffusionModel:
    """``families.TRANSFORMER_FILES`` loader: MODEL from a Cosmos Predict2 transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), header.shapes, name, weight_dtype, dtype)


def load_old_t5(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP (arch "cosmos") from an old T5-XXL encoder file (plain or ComfyUI's fp8_scaled)."""
    import torch
    from safetensors.torch import load_file

    from ..flow.loading import t5_tokenizer, text_encoder_from_state
    from ..fp8 import unscale_fp8

    header = read_header(path)
    state = unscale_fp8(load_file(str(path)), dtype or torch.float32)
    kind, model = text_encoder_from_state(state, header, name, dtype)
    if kind != "t5xxl":
        raise UnknownModelError(f"{name} is a {kind} text encoder; type cosmos takes the old T5-XXL "
                                "(oldt5_xxl_*.safetensors)")
    if model.config.feed_forward_proj != "relu":
        log.warning("%s: a gated (T5 v1.1) encoder; Cosmos Predict2 was trained on the old T5-XXL", name)
    return TextEncoder(tokenizers=(t5_tokenizer(path),), encoders=(model,), arch="cosmos")


def load_cosmos_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry for type ``cosmos``: one old T5-XXL file (or AuraFlow's Pile-T5-XL)."""
    from ..auraflow.loading import is_pile_t5, load_pile_t5_clip
    from ..flow.loading import require_safetensors

    if len(paths) != 1:
        raise ValueError("type cosmos takes one text encoder file (the old T5-XXL); use CLIPLoader")
    path = require_safetensors(paths[0], names[0])
    shapes = read_header(path).shapes
    if is_pile_t5(shapes):
        return load_pile_t5_clip(path, names[0], dtype)
    if any(k.endswith("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight") for k in shapes):
        raise UnknownModelError(f"{names[0]} is a UMT5 encoder (Wan's); type cosmos takes the old T5-XXL "
                                "(oldt5_xxl_*.safetensors), type wan takes UMT5-XXL")
    return load_old_t5(path, names[0], dtype)


__all__ = ["COSMOS_LATENT", "is_cosmos_transformer", "load_cosmos_clip", "load_cosmos_transformer", "load_old_t5",
           "transformer_from_state"]
