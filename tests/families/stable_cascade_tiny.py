"""Tiny random-weight Stable Cascade (stage C, stage B, stage A, CLIP-G) saved as ComfyUI's files under a home:

- ``checkpoints/stable_cascade_stage_c.safetensors``: stage C (original names) + CLIP-G (ComfyUI's ``clip_g.`` names,
  the projection as OpenCLIP stores it) and one tensor standing for its EfficientNet encoder (``vae.``);
- ``checkpoints/stable_cascade_stage_b.safetensors``: stage B (original names, ``clip_mapper``) + CLIP-G + stage A;
- ``diffusion_models/stage_c_bf16.safetensors`` (original names), ``stage_b_bf16.safetensors`` (diffusers' names),
  ``text_encoders/clip_g_cascade.safetensors`` (transformers' names), ``vae/stage_a.safetensors`` (ComfyUI's names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RTA = ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"]
RT = ["SDCascadeResBlock", "SDCascadeTimestepBlock"]
CLIP_G = dict(vocab_size=49408, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=1,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=40, bos_token_id=49406,
              eos_token_id=49407, pad_token_id=49407)
STAGE_C = dict(in_channels=16, out_channels=16, timestep_ratio_embedding_dim=16, patch_size=1, conditioning_dim=32,
               block_out_channels=[32, 32], num_attention_heads=[1, 1], down_num_layers_per_block=[1, 1],
               up_num_layers_per_block=[1, 1], down_blocks_repeat_mappers=[1, 1], up_blocks_repeat_mappers=[1, 1],
               block_types_per_layer=[RTA, RTA], clip_text_in_channels=48, clip_text_pooled_in_channels=40,
               clip_image_in_channels=24, clip_seq=4, effnet_in_channels=None, pixel_mapper_in_channels=None,
               kernel_size=3, dropout=[0.0, 0.0], self_attn=True, timestep_conditioning_type=["sca", "crp"],
               switch_level=[False])
STAGE_B = dict(in_channels=4, out_channels=4, timestep_ratio_embedding_dim=16, patch_size=2, conditioning_dim=32,
               block_out_channels=[16, 32], num_attention_heads=[0, 1], down_num_layers_per_block=[1, 1],
               up_num_layers_per_block=[1, 1], down_blocks_repeat_mappers=[1, 1], up_blocks_repeat_mappers=[2, 1],
               block_types_per_layer=[RT, RTA], clip_text_in_channels=None, clip_text_pooled_in_channels=40,
               clip_image_in_channels=None, clip_seq=4, effnet_in_channels=16, pixel_mapper_in_channels=3,
               kernel_size=3, dropout=[0.0, 0.0], self_attn=True, timestep_conditioning_type=["sca"],
               switch_level=None)
STAGE_A = dict(in_channels=3, out_channels=3, up_down_scale_factor=2, levels=2, bottleneck_blocks=1, embed_dim=32,
               latent_channels=4, num_vq_embeddings=64, scale_factor=0.43)
CKPT_C, CKPT_B = "stable_cascade_stage_c.safetensors", "stable_cascade_stage_b.safetensors"
UNET_C, UNET_B = "stage_c_bf16.safetensors", "stage_b_bf16.safetensors"
TEXT_ENCODER, VAE_FILE = "clip_g_cascade.safetensors", "stage_a.safetensors"


def unet_to_original(sd: dict[str, Any]) -> dict[str, Any]:
    """diffusers' StableCascadeUNet names → the original/ComfyUI ones (nn.MultiheadAttention, stage B's clip_mapper)."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if ".attention.to_q." in key:
            kind = key.rsplit(".", 1)[1]
            base = key.split(".attention.to_q.")[0] + ".attention."
            out[base + f"attn.in_proj_{kind}"] = torch.cat([sd[base + f"to_{n}.{kind}"] for n in "qkv"])
        elif ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        elif ".attention.to_out.0." in key:
            out[key.replace(".attention.to_out.0.", ".attention.attn.out_proj.")] = value
        elif key.startswith("clip_txt_pooled_mapper.") and "effnet_mapper.0.weight" in sd:
            out[key.replace("clip_txt_pooled_mapper.", "clip_mapper.")] = value
        else:
            out[key] = value
    return {k: v.contiguous() for k, v in out.items()}


def clip_to_comfy(sd: dict[str, Any]) -> dict[str, Any]:
    """transformers' CLIPTextModelWithProjection names → a ComfyUI checkpoint's ``clip_g.`` ones."""
    out = {"clip_g.transformer." + k: v for k, v in sd.items() if k != "text_projection.weight"}
    out["clip_g.text_projection"] = sd["text_projection.weight"].t().contiguous()
    return out


def stage_a_to_comfy(sd: dict[str, Any]) -> dict[str, Any]:
    """diffusers' PaellaVQModel names → ComfyUI's StageA ones (the codebook's name)."""
    return {k.replace("vquantizer.embedding.", "vquantizer.codebook."): v.contiguous() for k, v in sd.items()}


@dataclass
class TinyCascade:
    """The tiny modules and the home their files are saved under."""

    prior: Any
    decoder: Any
    vqgan: Any
    clip_g: Any
    home: Path

    def pipelines(self, resolution_multiple: float, latent_dim_scale: float) -> tuple[Any, Any]:
        """StableCascadePriorPipeline and StableCascadeDecoderPipeline over the same modules."""
        from diffusers import (
            DDPMWuerstchenScheduler,
            StableCascadeDecoderPipeline,
            StableCascadePriorPipeline,
        )

        from nodegraph.diffusion.loading import clip_tokenizer

        prior = StableCascadePriorPipeline(tokenizer=clip_tokenizer(), text_encoder=self.clip_g, prior=self.prior,
                                           scheduler=DDPMWuerstchenScheduler(),
                                           resolution_multiple=resolution_multiple)
        decoder = StableCascadeDecoderPipeline(decoder=self.decoder, tokenizer=clip_tokenizer(),
                                               text_encoder=self.clip_g, scheduler=DDPMWuerstchenScheduler(),
                                               vqgan=self.vqgan, latent_dim_scale=latent_dim_scale)
        return prior, decoder


def build(home: Path, seed: int = 0) -> TinyCascade:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import StableCascadeUNet
    from family_kit import jitter, model_folders
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from nodegraph.diffusion.stable_cascade.vae import paella_class

    torch.manual_seed(seed)
    prior = StableCascadeUNet(**STAGE_C).eval()
    decoder = StableCascadeUNet(**STAGE_B).eval()
    vqgan = paella_class()(**STAGE_A).eval()
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval()
    for module in (prior, decoder, vqgan, clip_g):
        jitter(module, 0.05)  # random norms, gammas and modulation so every weight matters
    models = model_folders(home, "checkpoints", "diffusion_models", "text_encoders", "vae")
    c_sd = {k: v.contiguous() for k, v in prior.state_dict().items()}
    b_sd = {k: v.contiguous() for k, v in decoder.state_dict().items()}
    a_sd = stage_a_to_comfy(vqgan.state_dict())
    g_sd = {k: v.contiguous() for k, v in clip_g.state_dict().items()}
    comfy_clip = {"text_encoder." + k: v for k, v in clip_to_comfy(g_sd).items()}
    save_file(unet_to_original(c_sd), str(models / "diffusion_models" / UNET_C))
    save_file(b_sd, str(models / "diffusion_models" / UNET_B))
    save_file(g_sd, str(models / "text_encoders" / TEXT_ENCODER))
    save_file(a_sd, str(models / "vae" / VAE_FILE))
    whole_c = {"model.diffusion_model." + k: v for k, v in unet_to_original(c_sd).items()}
    effnet = {"vae.encoder.backbone.1.0.block.0.1.num_batches_tracked": torch.tensor(0)}  # stands for the encoder
    save_file({**whole_c, **comfy_clip, **effnet}, str(models / "checkpoints" / CKPT_C))
    whole_b = {"model.diffusion_model." + k: v for k, v in unet_to_original(b_sd).items()}
    save_file({**whole_b, **comfy_clip, **{"vae." + k: v for k, v in a_sd.items()}},
              str(models / "checkpoints" / CKPT_B))
    return TinyCascade(prior, decoder, vqgan, clip_g, home)
