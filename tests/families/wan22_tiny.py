"""A tiny random-weight Wan 2.2 TI2V-5B (48-channel transformer, Wan 2.2 VAE) beside the tiny Wan 2.1 text encoder.

Files under a nodegraph home (besides ``wan_tiny``'s): ``diffusion_models/`` in ComfyUI's layout and diffusers'
layout, ``vae/wan2.2_vae.safetensors`` in the original Wan 2.2 layout (ComfyUI's file) and
``vae/wan2.2-vae-diffusers.safetensors``. ``WanPipeline`` / ``WanImageToVideoPipeline`` with ``expand_timesteps``
over the same modules are the numerical oracles.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from family_kit import cloned_state
from wan_tiny import TRANSFORMER, TinyWan, _vae_candidates, build, to_original

from nodegraph.diffusion.video_models.wan_files import shipped_config

TRANSFORMER_5B = dict(TRANSFORMER, in_channels=48, out_channels=48)
LAYOUTS_5B = {"comfyui": "wan2.2-ti2v-tiny-comfyui.safetensors", "diffusers": "wan2.2-ti2v-tiny-diffusers.safetensors"}
VAE22_FILES = {"comfyui": "wan2.2_vae.safetensors", "diffusers": "wan2.2-vae-diffusers.safetensors"}
_RESNET = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
           "conv_shortcut": "shortcut"}


def vae22_config() -> dict[str, Any]:
    """The shipped Wan 2.2 VAE config, 8 channels wide."""
    return dict(shipped_config("vae_wan2.2"), base_dim=8, decoder_base_dim=8)


def vae22_to_original(state: dict[str, Any], num_res_blocks: int = 2) -> dict[str, Any]:
    """Original Wan 2.2 names (ComfyUI's ``wan2.2_vae`` layout) for a diffusers Wan 2.2 VAE state dict."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    out = {}
    for key, value in state.items():
        m = re.match(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets\.(\d+)\.(\w+)|"
                     r"(downsampler|upsampler)\.(resample\.1|time_conv))\.(\w+)$", key)
        if m:
            side, _, i, _, j, part, sampler, sub, leaf = m.groups()
            group = "downsamples" if side == "encoder" else "upsamples"
            if sampler is None:
                out[f"{side}.{group}.{i}.{group}.{j}.{_RESNET[part]}.{leaf}"] = value
            else:
                index = num_res_blocks if side == "encoder" else num_res_blocks + 1
                out[f"{side}.{group}.{i}.{group}.{index}.{sub}.{leaf}"] = value
            continue
        for cand in _vae_candidates(key)[1:]:  # [0] is the key itself, which the converter keeps as it is
            if list(convert_wan_vae_to_diffusers({cand: None})) == [key]:
                out[cand] = value
                break
        else:
            raise AssertionError(f"no original name for {key}")
    return out


@dataclass
class TinyWan22:
    """The tiny 5B modules, the tiny Wan 2.1 text encoder, and the home their files are in."""

    transformer: Any
    vae: Any
    base: TinyWan

    @property
    def home(self) -> Path:
        """The nodegraph home holding the files."""
        return self.base.home

    def _scheduler(self, shift: float, steps: int) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps = functools.partial(scheduler.set_timesteps,
                                                    sigmas=np.linspace(1.0, 1.0 / steps, steps))
        return scheduler

    def pipeline(self, shift: float, steps: int) -> Any:
        """``WanPipeline(expand_timesteps=True)``, its Euler schedule on ComfyUI's "simple" sigmas."""
        from diffusers import WanPipeline

        return WanPipeline(tokenizer=self.base.tokenizer, text_encoder=self.base.text_encoder,
                           transformer=self.transformer, vae=self.vae, scheduler=self._scheduler(shift, steps),
                           expand_timesteps=True)

    def i2v_pipeline(self, shift: float, steps: int) -> Any:
        """``WanImageToVideoPipeline(expand_timesteps=True)`` (no image encoder), Euler on "simple" sigmas."""
        from diffusers import WanImageToVideoPipeline

        return WanImageToVideoPipeline(tokenizer=self.base.tokenizer, text_encoder=self.base.text_encoder,
                                       transformer=self.transformer, vae=self.vae,
                                       scheduler=self._scheduler(shift, steps), expand_timesteps=True)


def build22(home: Path) -> TinyWan22:
    """Build the tiny Wan 2.2 TI2V-5B and write its files (and ``wan_tiny``'s) under ``home/models``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import save_file

    base = build(home)
    torch.manual_seed(22)
    transformer = WanTransformer3DModel(**TRANSFORMER_5B).eval()
    with torch.no_grad():  # random modulation tables and norms, so a wrong mapping shows
        for name, p in transformer.named_parameters():
            if "scale_shift_table" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") and "norm" in name else 0.0))
    vae = AutoencoderKLWan(**vae22_config()).eval()
    with torch.no_grad():  # RMS-norm gains away from 1, so a misplaced tensor shows
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    models = home / "models"
    state = cloned_state(transformer)
    save_file(state, str(models / "diffusion_models" / LAYOUTS_5B["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in to_original(state).items()},
              str(models / "diffusion_models" / LAYOUTS_5B["comfyui"]))
    vstate = cloned_state(vae)
    save_file(vstate, str(models / "vae" / VAE22_FILES["diffusers"]))
    save_file(vae22_to_original(vstate), str(models / "vae" / VAE22_FILES["comfyui"]))
    return TinyWan22(transformer=transformer, vae=vae, base=base)
