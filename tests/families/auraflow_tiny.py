"""A tiny random-weight AuraFlow (transformer, Pile-T5-style UMT5 encoder + tokenizer, SDXL-style 4-channel VAE),
saved as ComfyUI expects: the all-in-one ``checkpoints/aura_flow_0.1.safetensors`` (original names under ``model.``,
``text_encoders.pile_t5xl.transformer.``, ``vae.`` in LDM names) with ``pile_t5_tokenizer/`` beside it, and the
split files ``diffusion_models/`` (original and diffusers names) + ``text_encoders/pile_t5xl.safetensors``.
``AuraFlowPipeline`` over the same modules is the oracle."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter, model_folders

TRANSFORMER = dict(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
                   attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=64,
                   out_channels=4, pos_embed_max_size=64)
TEXT = dict(vocab_size=64, d_model=32, d_kv=16, d_ff=48, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=128, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
            use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
           latent_channels=4, norm_num_groups=32, sample_size=64, scaling_factor=0.13025)
CHECKPOINT = "aura_flow_0.1.safetensors"
LAYOUTS = {"original": "aura_flow_tiny_original.safetensors", "diffusers": "aura_flow_tiny_diffusers.safetensors"}
TEXT_ENCODER = "pile_t5xl.safetensors"

_ATTN = {"to_q": "w2q", "to_k": "w2k", "to_v": "w2v", "to_out.0": "w2o", "add_q_proj": "w1q", "add_k_proj": "w1k",
         "add_v_proj": "w1v", "to_add_out": "w1o"}
_SINGLE_ATTN = {"to_q": "w1q", "to_k": "w1k", "to_v": "w1v", "to_out.0": "w1o"}
_FF = {"linear_1": "c_fc1", "linear_2": "c_fc2", "out_projection": "c_proj"}


@dataclass
class TinyAura:
    """The tiny modules and where their files are."""

    transformer: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    home: Path

    def pipeline(self) -> Any:
        """AuraFlowPipeline over the same modules, with a plain (unshifted) scheduler: sigmas are passed in."""
        from diffusers import AuraFlowPipeline, FlowMatchEulerDiscreteScheduler

        return AuraFlowPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                                transformer=self.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))


def to_original(state: dict[str, Any]) -> dict[str, Any]:
    """The original/ComfyUI names of a diffusers AuraFlow state (the inverse of diffusers' converter)."""
    fixed = {"register_tokens": "register_tokens", "time_step_proj.linear_1": "t_embedder.mlp.0",
             "time_step_proj.linear_2": "t_embedder.mlp.2", "context_embedder": "cond_seq_linear",
             "proj_out": "final_linear", "pos_embed.pos_embed": "positional_encoding",
             "pos_embed.proj": "init_x_linear", "norm_out.linear": "modF.1"}
    out = {}
    for key, value in state.items():
        new = None
        for a, b in fixed.items():
            if key == a or key.startswith(a + "."):
                new = b + key[len(a):]
        if key == "norm_out.linear.weight":  # diffusers keeps (scale, shift); the original (shift, scale)
            value = torch.cat(value.chunk(2, dim=0)[::-1])
        m = re.match(r"joint_transformer_blocks\.(\d+)\.(.*)", key)
        if m:
            i, rest = m.groups()
            for part, orig in (("ff_context.", "mlpC."), ("ff.", "mlpX.")):
                if rest.startswith(part):
                    new = f"double_layers.{i}.{orig}{_FF[rest[len(part):].rsplit('.', 1)[0]]}.weight"
            if rest.startswith("norm1_context."):
                new = f"double_layers.{i}.modC.1.weight"
            elif rest.startswith("norm1."):
                new = f"double_layers.{i}.modX.1.weight"
            elif rest.startswith("attn."):
                new = f"double_layers.{i}.attn.{_ATTN[rest[5:].rsplit('.', 1)[0]]}.weight"
        m = re.match(r"single_transformer_blocks\.(\d+)\.(.*)", key)
        if m:
            i, rest = m.groups()
            if rest.startswith("ff."):
                new = f"single_layers.{i}.mlp.{_FF[rest[3:].rsplit('.', 1)[0]]}.weight"
            elif rest.startswith("norm1."):
                new = f"single_layers.{i}.modCX.1.weight"
            elif rest.startswith("attn."):
                new = f"single_layers.{i}.attn.{_SINGLE_ATTN[rest[5:].rsplit('.', 1)[0]]}.weight"
        if new is None:
            raise KeyError(f"no original name for {key}")
        out[new] = value.contiguous()
    return out


def build(home: Path, seed: int = 0) -> TinyAura:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AuraFlowTransformer2DModel, AutoencoderKL
    from flux_tiny import t5_tokenizer_files
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    transformer = AuraFlowTransformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random register tokens, norms and modulation so every weight matters
    with torch.no_grad():
        for block in transformer.joint_transformer_blocks:  # so the prompt visibly steers the tiny model
            block.attn.add_v_proj.weight.mul_(30.0)
            block.norm1.linear.weight.mul_(10.0)
    text_encoder = UMT5EncoderModel(UMT5Config(**TEXT)).eval()
    vae = AutoencoderKL(**VAE).eval()
    models = model_folders(home, "checkpoints", "diffusion_models", "text_encoders")
    for sub in ("checkpoints", "text_encoders"):
        t5_tokenizer_files(models / sub / "pile_t5_tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(models / "checkpoints" / "pile_t5_tokenizer"))
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    original = to_original(sd)
    save_file(original, str(models / "diffusion_models" / LAYOUTS["original"]))
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    te = {k: v.contiguous() for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(te, str(models / "text_encoders" / TEXT_ENCODER))
    whole = {"model." + k: v for k, v in original.items()}
    whole.update({"text_encoders.pile_t5xl.transformer." + k: v for k, v in te.items()})
    whole.update({"vae." + k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()})
    save_file(whole, str(models / "checkpoints" / CHECKPOINT))
    return TinyAura(transformer, text_encoder, tokenizer, vae, home)
