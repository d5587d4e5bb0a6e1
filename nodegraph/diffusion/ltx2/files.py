"""LTX-2 transformer files → MODEL (diffusers' ``LTX2VideoTransformer3DModel``, joint audio + video), shipped configs.

Layouts: the Lightricks release, also ComfyUI's (``patchify_proj``, ``audio_patchify_proj``, ``adaln_single``,
``av_ca_*`` under ``model.diffusion_model.`` or at the root; converted with diffusers' own converter) and diffusers'
(``proj_in``, ``audio_proj_in``, ``time_embed``). Widths, depth and caption width are read from the tensor shapes;
head widths are the release's (128 video, 64 audio). LTX-2.3 files (gated attention, prompt modulation) are refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError
from ..flow.detect import read_config
from ..types import DiffusionModel, LatentFormat

log = logging.getLogger(__name__)

LTX2_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "ltx2"
#: The shipped configs (``configs/ltx2/<name>.json``) and their diffusers/transformers classes.
CONFIG_CLASSES = {"transformer": "diffusers:LTX2VideoTransformer3DModel",
                  "video_vae": "diffusers:AutoencoderKLLTX2Video",
                  "audio_vae": "diffusers:AutoencoderKLLTX2Audio",
                  "vocoder": "diffusers.pipelines.ltx2:LTX2Vocoder",
                  "connectors": "diffusers.pipelines.ltx2:LTX2TextConnectors",
                  "gemma3_12b_text": "transformers:Gemma3TextModel"}
#: LTX-2's video latent space: 128 channels, 32 pixels per cell, 8 frames per latent frame after the first;
#: LATENTs hold the VAE's normalised latents, as in ComfyUI.
LTX2_LATENT = LatentFormat(channels=128, downscale=32, scaling_factor=1.0, shift_factor=0.0)
VIDEO_HEAD, AUDIO_HEAD = 128, 64
_COMFY = "model.diffusion_model."
_ORIGINAL_MARK = "audio_patchify_proj.weight"
_DIFFUSERS_MARK = "audio_proj_in.weight"
_LTX23 = ("prompt_adaln.", "to_gate_logits.", "prompt_scale_shift_table")


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped LTX-2 config (``configs/ltx2/<name>.json``) without its ``_class_name``."""
    return read_config(LTX2_CONFIGS, name)


def ltx2_layout(keys: Any) -> str | None:
    """"comfyui", "original" or "diffusers" when tensor names are an LTX-2 transformer's, else None."""
    keys = set(keys)
    if _COMFY + _ORIGINAL_MARK in keys:
        return "comfyui"
    if _ORIGINAL_MARK in keys:
        return "original"
    if _DIFFUSERS_MARK in keys and "proj_in.weight" in keys:
        return "diffusers"
    return None


def is_ltx2_transformer(header: Any) -> bool:
    """Whether a file header (``detect.Header``) holds an LTX-2 transformer."""
    return ltx2_layout(header.shapes) is not None


def to_diffusers(state: dict[str, Any], layout: str) -> dict[str, Any]:
    """Diffusers names for an LTX-2 transformer state dict of ``layout`` (original names via diffusers)."""
    if layout == "diffusers":
        return state
    from diffusers.loaders.single_file_utils import (
        convert_ltx2_transformer_to_diffusers,
    )

    return convert_ltx2_transformer_to_diffusers(state)


def config_from_state(state: dict[str, Any], name: str = "this file") -> dict[str, Any]:
    """``LTX2VideoTransformer3DModel`` config from diffusers-named tensors (sizes from the shapes)."""
    if any(marker in k for k in state for marker in _LTX23):
        raise UnknownModelError(f"{name} is an LTX-2.3 transformer (gated attention, prompt modulation); this version "
                                "loads LTX-2.0 files (ltx-2-19b-*.safetensors)")
    inner, in_channels = (int(s) for s in state["proj_in.weight"].shape)
    audio_inner, audio_in = (int(s) for s in state["audio_proj_in.weight"].shape)
    if inner % VIDEO_HEAD or audio_inner % AUDIO_HEAD:
        raise UnknownModelError(f"{name}: widths {inner}/{audio_inner} are not multiples of LTX-2's head widths "
                                f"{VIDEO_HEAD}/{AUDIO_HEAD}; the file is not an LTX-2 model")
    layers = {int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")}
    return dict(shipped_config("transformer"), in_channels=in_channels,
                out_channels=int(state["proj_out.weight"].shape[0]), num_attention_heads=inner // VIDEO_HEAD,
                attention_head_dim=VIDEO_HEAD, cross_attention_dim=int(state["transformer_blocks.0.attn2.to_k.weight"]
                                                                      .shape[1]),
                audio_in_channels=audio_in, audio_out_channels=int(state["audio_proj_out.weight"].shape[0]),
                audio_num_attention_heads=audio_inner // AUDIO_HEAD, audio_attention_head_dim=AUDIO_HEAD,
                audio_cross_attention_dim=int(state["transformer_blocks.0.audio_attn2.to_k.weight"].shape[1]),
                num_layers=len(layers), caption_channels=int(state["caption_projection.linear_1.weight"].shape[1]))


def transformer_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from an LTX-2 transformer's tensors in any layout (``state`` is emptied as they are placed)."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings
    from ..loading import quiet_libraries
    from ..ltx.files import DEFAULT_SHIFT

    layout = ltx2_layout(state)
    if layout is None:
        raise UnknownModelError(f"{name} is not an LTX-2 transformer (no audio_patchify_proj / audio_proj_in tensors)")
    if any(k.endswith(("weight_scale", "scale_weight", "input_scale")) for k in state):
        raise UnknownModelError(f"{name} holds scaled fp8 weights (weight_scale tensors), which this version does not "
                                "read; use the bf16 file (ltx-2-19b-dev.safetensors) or UNETLoader's fp8 weight_dtype")
    if layout == "comfyui":
        for k in [k for k in state if not k.startswith(_COMFY)]:
            state.pop(k)  # VAEs, vocoder, text projection of an all-in-one file: loaded by their own loaders
    for k in [k for k in state if "embeddings_connector." in k]:
        state.pop(k)  # the text connectors: part of the CLIP (LTXAVTextEncoderLoader)
    with quiet_libraries():
        state = to_diffusers(state, layout)
    config = config_from_state(state, name)
    log.info("%s: LTX-2 transformer (%s layout), %d layers, %d/%d wide", name, layout, config["num_layers"],
             config["num_attention_heads"] * VIDEO_HEAD, config["audio_num_attention_heads"] * AUDIO_HEAD)
    compute = dtype or torch.float32
    transformer = filled_model(LTX2VideoTransformer3DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch="ltx2", source=name, latent=LTX2_LATENT,
                          family="ltx2", flow=FlowSettings("flux", DEFAULT_SHIFT, 1000.0))


def read_tensors(path: Path, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The tensors of a safetensors file whose names start with one of ``prefixes`` (the rest stay on disk: an
    all-in-one LTX-2 file is ~40 GB, and each loader needs only its part)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefixes)}  # noqa: SIM118


def load_ltx2_transformer(path: Path, header: Any, name: str, weight_dtype: str = "default",
                          dtype: Any = None) -> DiffusionModel:
    """MODEL from an LTX-2 transformer file (UNETLoader; an all-in-one file's transformer too)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), name, weight_dtype, dtype)


def _class(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    from accelerate import init_empty_weights
    from transformers import Gemma3TextConfig

    from ..loading import quiet_libraries

    out = {}
    with quiet_libraries(), init_empty_weights():
        for name, ref in CONFIG_CLASSES.items():
            cls = _class(ref)
            model = (cls(Gemma3TextConfig(**shipped_config(name))) if name.startswith("gemma")
                     else cls.from_config(shipped_config(name)))
            out[name] = sum(p.numel() for p in model.parameters())
    return out


__all__ = ["AUDIO_HEAD", "CONFIG_CLASSES", "LTX2_CONFIGS", "LTX2_LATENT", "VIDEO_HEAD", "config_from_state",
           "is_ltx2_transformer", "load_ltx2_transformer", "ltx2_layout", "parameter_counts", "read_tensors",
           "shipped_config",
           "to_diffusers", "transformer_from_state"]
