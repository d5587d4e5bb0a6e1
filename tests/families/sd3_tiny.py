"""A tiny random-weight SD3.5 (MMDiT-X transformer with q/k norms and a dual-attention block, CLIP-L, CLIP-G, T5,
16-channel VAE), saved as ComfyUI and Stability ship it.

Files under a nodegraph home: ``diffusion_models/`` in ComfyUI's layout (``model.diffusion_model.joint_blocks.*``),
Stability's (``joint_blocks.*`` at the root) and diffusers'; ``text_encoders/clip_l.safetensors``,
``clip_g.safetensors`` (transformers' names, as in the SD3.5 release), ``t5xxl_fp16.safetensors`` + ``t5_tokenizer/``;
``vae/sd3_vae.safetensors`` (LDM names); and all of it in ``checkpoints/sd3.5_large.safetensors`` (Stability's
all-in-one layout). ``StableDiffusion3Pipeline`` over the same modules is the numerical oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TRANSFORMER = dict(sample_size=8, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=96, caption_projection_dim=32, pooled_projection_dim=80,
                   out_channels=16, pos_embed_max_size=16, dual_attention_layers=(0,), qk_norm="rms_norm")
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
           latent_channels=16, norm_num_groups=32, sample_size=64, scaling_factor=1.5305, shift_factor=0.0609,
           use_quant_conv=False, use_post_quant_conv=False)
CLIP_L = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=1,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32, bos_token_id=0, eos_token_id=2,
              pad_token_id=1)
CLIP_G = dict(CLIP_L, hidden_size=48, projection_dim=48, hidden_act="gelu",
              intermediate_size=80, num_hidden_layers=4)  # wider than CLIP-L, as bigG is (1280 vs 768)
T5 = dict(vocab_size=64, d_model=96, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
          relative_attention_max_distance=128, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
          use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
CHECKPOINT = "sd3.5_large.safetensors"
LAYOUTS = {"comfyui": "sd3.5-tiny-comfyui.safetensors", "original": "sd3.5-tiny-stability.safetensors",
           "diffusers": "sd3.5-tiny-diffusers.safetensors"}


def _swap(t: Any) -> Any:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_original(sd: dict[str, Any]) -> dict[str, Any]:
    """Stability's (ComfyUI's) names for a diffusers SD3 transformer state dict; the inverse of diffusers' converter."""
    sd = dict(sd)
    out = {"pos_embed": sd.pop("pos_embed.pos_embed")}
    ren = {"pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
           "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2", "context_embedder": "context_embedder",
           "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
           "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2", "proj_out": "final_layer.linear"}
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
    for i in sorted(blocks):
        b, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for s in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{s}"] = torch.cat([sd.pop(f"{b}attn.to_{n}.{s}") for n in "qkv"])
            out[f"{o}context_block.attn.qkv.{s}"] = torch.cat([sd.pop(f"{b}attn.add_{n}_proj.{s}") for n in "qkv"])
            if f"{b}attn2.to_q.{s}" in sd:
                out[f"{o}x_block.attn2.qkv.{s}"] = torch.cat([sd.pop(f"{b}attn2.to_{n}.{s}") for n in "qkv"])
            if f"{b}norm1_context.linear.{s}" in sd and f"{b}ff_context.net.2.{s}" not in sd:  # last block
                out[f"{o}context_block.adaLN_modulation.1.{s}"] = _swap(sd.pop(f"{b}norm1_context.linear.{s}"))
        ren.update({f"{b}attn.norm_q": f"{o}x_block.attn.ln_q", f"{b}attn.norm_k": f"{o}x_block.attn.ln_k",
                    f"{b}attn.norm_added_q": f"{o}context_block.attn.ln_q",
                    f"{b}attn.norm_added_k": f"{o}context_block.attn.ln_k",
                    f"{b}attn2.norm_q": f"{o}x_block.attn2.ln_q", f"{b}attn2.norm_k": f"{o}x_block.attn2.ln_k",
                    f"{b}attn.to_out.0": f"{o}x_block.attn.proj", f"{b}attn.to_add_out": f"{o}context_block.attn.proj",
                    f"{b}attn2.to_out.0": f"{o}x_block.attn2.proj",
                    f"{b}norm1.linear": f"{o}x_block.adaLN_modulation.1",
                    f"{b}norm1_context.linear": f"{o}context_block.adaLN_modulation.1",
                    f"{b}ff.net.0.proj": f"{o}x_block.mlp.fc1", f"{b}ff.net.2": f"{o}x_block.mlp.fc2",
                    f"{b}ff_context.net.0.proj": f"{o}context_block.mlp.fc1",
                    f"{b}ff_context.net.2": f"{o}context_block.mlp.fc2"})
    for s in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{s}"] = _swap(sd.pop(f"norm_out.linear.{s}"))
    for old, new in ren.items():
        for s in ("weight", "bias"):
            if f"{old}.{s}" in sd:
                out[f"{new}.{s}"] = sd.pop(f"{old}.{s}")
    assert not sd, f"unconverted: {sorted(sd)[:5]}"
    return out


@dataclass
class TinySD3:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    clip_l: Any
    clip_g: Any
    t5: Any
    home: Path

    def pipeline(self, shift: float = 3.0) -> Any:
        """StableDiffusion3Pipeline over the same modules and tokenizers."""
        from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
        from transformers import T5TokenizerFast

        from nodegraph.diffusion.loading import clip_tokenizer

        t5_tok = T5TokenizerFast.from_pretrained(str(self.home / "models" / "text_encoders" / "t5_tokenizer"))
        return StableDiffusion3Pipeline(
            transformer=self.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift), vae=self.vae,
            text_encoder=self.clip_l, tokenizer=clip_tokenizer(), text_encoder_2=self.clip_g,
            tokenizer_2=clip_tokenizer(pad_token="!"), text_encoder_3=self.t5, tokenizer_3=t5_tok)


def build(home: Path, seed: int = 0) -> TinySD3:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from family_kit import jitter, model_folders
    from flux_tiny import t5_tokenizer_files
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so every weight matters
    vae = AutoencoderKL(**VAE).eval()
    clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).eval()
    with torch.no_grad():  # ComfyUI takes SD3's CLIP-L pooled output unprojected: the release's projection is 1
        clip_l.text_projection.weight.copy_(torch.eye(CLIP_L["hidden_size"]))
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval()
    t5 = T5EncoderModel(T5Config(**T5)).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae", "checkpoints")
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    original = {k: v.contiguous() for k, v in to_original(sd).items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(original, str(models / "diffusion_models" / LAYOUTS["original"]))
    save_file({"model.diffusion_model." + k: v for k, v in original.items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    clip_l_state = {k: v.contiguous() for k, v in clip_l.state_dict().items()}
    clip_g_state = {k: v.contiguous() for k, v in clip_g.state_dict().items()}
    save_file(clip_l_state, str(models / "text_encoders" / "clip_l.safetensors"))
    save_file(clip_g_state, str(models / "text_encoders" / "clip_g.safetensors"))
    t5_state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(models / "text_encoders" / "t5xxl_fp16.safetensors"))
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    vae_ldm = {k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()}
    save_file(vae_ldm, str(models / "vae" / "sd3_vae.safetensors"))
    t5_tokenizer_files(models / "checkpoints" / "t5_tokenizer")
    whole = {"model.diffusion_model." + k: v for k, v in original.items()}
    whole.update({"text_encoders.clip_l.transformer." + k: v for k, v in clip_l_state.items()})
    whole.update({"text_encoders.clip_g.transformer." + k: v for k, v in clip_g_state.items()})
    whole.update({"text_encoders.t5xxl.transformer." + k: v for k, v in t5_state.items()})
    whole.update({"first_stage_model." + k: v for k, v in vae_ldm.items()})
    save_file(whole, str(models / "checkpoints" / CHECKPOINT))
    return TinySD3(transformer, vae, clip_l, clip_g, t5, home)
