"""A tiny random-weight Chroma (transformer, T5 + tokenizer, 16-channel Flux VAE), saved as ComfyUI expects.

Files under a nodegraph home: ``diffusion_models/`` in ComfyUI's layout (Flux's original names plus
``distilled_guidance_layer.*`` under ``model.diffusion_model.``) and diffusers';
``text_encoders/t5xxl_fp16.safetensors`` + ``t5_tokenizer/``; ``vae/ae.safetensors``. ``ChromaPipeline`` over the
same modules is the numerical oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter, model_folders
from flux_tiny import T5, VAE, t5_tokenizer_files

TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=32,
                   num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 14, 14],
                   approximator_num_channels=64, approximator_hidden_dim=48, approximator_layers=2)
T5_CONFIG = dict(T5, relative_attention_max_distance=128)  # T5's; the loader cannot read it from the file
LAYOUTS = {"comfyui": "chroma-tiny-comfyui.safetensors", "diffusers": "chroma-tiny-diffusers.safetensors"}


@dataclass
class TinyChroma:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    t5: Any
    home: Path

    def pipeline(self) -> Any:
        """ChromaPipeline over the same modules; its scheduler shifts by 1.15 at every size (ComfyUI's default)."""
        from diffusers import ChromaPipeline, FlowMatchEulerDiscreteScheduler
        from transformers import T5TokenizerFast

        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=1.15,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
        tok = T5TokenizerFast.from_pretrained(str(self.home / "models" / "text_encoders" / "t5_tokenizer"))
        return ChromaPipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.t5, tokenizer=tok,
                              transformer=self.transformer)


def build(home: Path, seed: int = 0) -> TinyChroma:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKL, ChromaTransformer2DModel
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    from nodegraph.diffusion.flow.convert import to_original
    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)
    vae = AutoencoderKL(**VAE).eval()
    t5 = T5EncoderModel(T5Config(**T5_CONFIG)).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in to_original(sd).items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file({k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
              str(models / "text_encoders" / "t5xxl_fp16.safetensors"))
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()},
              str(models / "vae" / "ae.safetensors"))
    return TinyChroma(transformer, vae, t5, home)
