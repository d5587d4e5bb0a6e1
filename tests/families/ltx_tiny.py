"""A tiny random-weight LTX-Video (transformer, T5 + tokenizer, 0.9.0-structured VAE), saved as ComfyUI expects.

Files under a nodegraph home: ``checkpoints/ltx-tiny.safetensors`` (all-in-one: original names under
``model.diffusion_model.`` and ``vae.``, as ``ltx-video-2b-v0.9.safetensors``), ``diffusion_models/`` in the
original and diffusers layouts, ``vae/ltx-vae-diffusers.safetensors``, ``text_encoders/t5xxl_fp16.safetensors`` with
a tiny ``t5_tokenizer/`` beside it. ``LTXPipeline`` over the same modules is the numerical oracle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, model_folders
from flux_tiny import T5, t5_tokenizer_files

TRANSFORMER = dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=2,
                   attention_head_dim=64, cross_attention_dim=128, num_layers=2, caption_channels=32)
VAE = dict(latent_channels=128, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32, 32),
           layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
           spatio_temporal_scaling=(True, True, True, False), decoder_spatio_temporal_scaling=(True, True, True, False),
           decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
           upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=4, patch_size_t=1,
           encoder_causal=True, decoder_causal=False)
CHECKPOINT = "ltx-tiny.safetensors"
CAUSAL = "ltx-tiny-causal.safetensors"  # the same weights, with 0.9.5+ metadata (causal temporal positions)
LAYOUTS = {"comfyui": "ltx-tiny-comfyui.safetensors", "diffusers": "ltx-tiny-diffusers.safetensors"}
VAE_FILE = "ltx-vae-diffusers.safetensors"
TEXT = "t5xxl_fp16.safetensors"

#: diffusers prefix → original prefix of the LTX VAE (0.9.0), longest first (inverse of diffusers' converter).
_VAE_PREFIXES = (
    ("decoder.up_blocks.1.upsamplers.0.", "decoder.up_blocks.2."), ("decoder.up_blocks.2.conv_in.", "decoder.up_blocks.4."),
    ("decoder.up_blocks.2.upsamplers.0.", "decoder.up_blocks.5."), ("decoder.up_blocks.3.conv_in.", "decoder.up_blocks.7."),
    ("decoder.up_blocks.3.upsamplers.0.", "decoder.up_blocks.8."), ("decoder.mid_block.", "decoder.up_blocks.0."),
    ("decoder.up_blocks.0.", "decoder.up_blocks.1."), ("decoder.up_blocks.1.", "decoder.up_blocks.3."),
    ("decoder.up_blocks.2.", "decoder.up_blocks.6."), ("decoder.up_blocks.3.", "decoder.up_blocks.9."),
    ("encoder.down_blocks.0.downsamplers.0.", "encoder.down_blocks.1."),
    ("encoder.down_blocks.0.conv_out.", "encoder.down_blocks.2."),
    ("encoder.down_blocks.1.downsamplers.0.", "encoder.down_blocks.4."),
    ("encoder.down_blocks.1.conv_out.", "encoder.down_blocks.5."),
    ("encoder.down_blocks.2.downsamplers.0.", "encoder.down_blocks.7."),
    ("encoder.down_blocks.0.", "encoder.down_blocks.0."), ("encoder.down_blocks.1.", "encoder.down_blocks.3."),
    ("encoder.down_blocks.2.", "encoder.down_blocks.6."), ("encoder.down_blocks.3.", "encoder.down_blocks.8."),
    ("encoder.mid_block.", "encoder.down_blocks.9."))


def transformer_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original (ComfyUI) names for a diffusers LTX transformer state dict, under ``model.diffusion_model.``."""
    out = {}
    for key, value in state.items():
        new = key.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single")
        new = new.replace("norm_q", "q_norm").replace("norm_k", "k_norm")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original names (under ``vae.``) for a diffusers 0.9.0 LTX VAE state dict; checked with diffusers' converter."""
    from diffusers.loaders.single_file_utils import (
        convert_ltx_vae_checkpoint_to_diffusers,
    )

    out = {}
    for key, value in state.items():
        new = {"latents_mean": "per_channel_statistics.mean-of-means",
               "latents_std": "per_channel_statistics.std-of-means"}.get(key, key)
        for a, b in _VAE_PREFIXES:
            if new.startswith(a):
                new = b + new[len(a):]
                break
        new = new.replace("resnets", "res_blocks").replace("conv_shortcut.conv", "conv_shortcut")
        new = new.replace("norm3.", "norm3.norm.")
        out["vae." + new] = value
    back = convert_ltx_vae_checkpoint_to_diffusers(dict(out))
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:5]
    return out


@dataclass
class TinyLTX:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    t5: Any
    home: Path

    def condition_pipeline(self) -> Any:
        """LTXConditionPipeline (causal temporal positions) over the same modules; Euler on the sigmas its call's
        ``timesteps`` give (no shift)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, LTXConditionPipeline

        return LTXConditionPipeline(**dict(self.pipeline().components,
                                           scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0)))

    def pipeline(self) -> Any:
        """LTXPipeline over the same modules with LTX-Video's scheduler (0.95/2.05 shifts, terminal 0.1)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline
        from transformers import T5TokenizerFast

        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                    base_image_seq_len=1024, max_image_seq_len=4096,
                                                    shift_terminal=0.1)
        tok = T5TokenizerFast.from_pretrained(str(self.home / "models" / "text_encoders" / "t5_tokenizer"))
        return LTXPipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.t5, tokenizer=tok,
                           transformer=self.transformer)


def build(home: Path) -> TinyLTX:
    """Build the tiny LTX-Video and write its files under ``home/models``."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(**TRANSFORMER).eval()
    with torch.no_grad():  # random modulation tables, so a wrong mapping shows
        for name, p in transformer.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    vae = AutoencoderKLLTXVideo(**VAE).eval()
    with torch.no_grad():  # non-trivial latent statistics
        vae.latents_mean.copy_(torch.randn(128) * 0.1)
        vae.latents_std.copy_(torch.rand(128) + 0.5)
    # T5-XXL's relative-attention reach (128): the loader takes it from the shipped config, not from shapes
    t5 = T5EncoderModel(T5Config(**dict(T5, relative_attention_max_distance=128))).eval()
    models = model_folders(home, "checkpoints", "diffusion_models", "text_encoders", "vae")
    state = cloned_state(transformer)
    vstate = cloned_state(vae)
    original = transformer_to_original(state)
    save_file(state, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(original, str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file(vstate, str(models / "vae" / VAE_FILE))
    save_file(dict(original, **vae_to_original(vstate)), str(models / "checkpoints" / CHECKPOINT))
    causal = {"config": json.dumps({"transformer": {"causal_temporal_positioning": True}})}  # as 0.9.5+ files
    save_file(dict(original, **vae_to_original(vstate)), str(models / "checkpoints" / CAUSAL), metadata=causal)
    t5_state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(models / "text_encoders" / TEXT))
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    return TinyLTX(transformer, vae, t5, home)
