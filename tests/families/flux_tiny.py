"""A tiny random-weight Flux.1 (transformer, CLIP-L, T5, 16-channel VAE, T5 tokenizer), saved as ComfyUI expects.

Files under a nodegraph home: ``diffusion_models/`` in three layouts (ComfyUI's, the original BFL one, diffusers'),
``text_encoders/clip_l.safetensors`` + ``t5xxl_fp16.safetensors`` + ``t5_tokenizer/``, ``vae/ae.safetensors``
(LDM layout, as Flux's ae.safetensors), and all of them in one ``checkpoints/flux1-dev-fp8.safetensors``. ``FluxPipeline`` over the same modules is the numerical oracle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter, model_folders

WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "green", "blue", "circle", "square", "on", "sky", "tree")
TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=32,
                   num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=64, guidance_embeds=True,
                   axes_dims_rope=[4, 14, 14])
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
           latent_channels=16, norm_num_groups=32, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
           use_quant_conv=False, use_post_quant_conv=False)
CLIP = dict(vocab_size=49408, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64, bos_token_id=0, eos_token_id=2,
            pad_token_id=1)
T5 = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
          relative_attention_max_distance=16, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
          use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
CHECKPOINT = "flux1-dev-fp8.safetensors"  # ComfyUI's all-in-one file name
LAYOUTS = {"comfyui": "flux1-tiny-comfyui.safetensors", "original": "flux1-tiny-bfl.safetensors",
           "diffusers": "flux1-tiny-diffusers.safetensors"}


@dataclass
class TinyFlux:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    clip: Any
    t5: Any
    home: Path

    def pipeline(self) -> Any:
        """FluxPipeline over the same modules and tokenizers."""
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
        from transformers import T5TokenizerFast

        from nodegraph.diffusion.loading import clip_tokenizer

        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
        t5_tok = T5TokenizerFast.from_pretrained(str(self.home / "models" / "text_encoders" / "t5_tokenizer"))
        return FluxPipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.clip, tokenizer=clip_tokenizer(),
                            text_encoder_2=self.t5, tokenizer_2=t5_tok, transformer=self.transformer)


def t5_tokenizer_files(folder: Path) -> None:
    """A tiny T5-style (Unigram, ▁ word marks, </s> appended) tokenizer.json in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0 - i / 10) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("▁", -3.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": 512, "extra_ids": 0,
         "tokenizer_class": "T5Tokenizer"}))


def build(home: Path, seed: int = 0) -> TinyFlux:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from nodegraph.diffusion.flow.convert import to_original
    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so every weight matters
    vae = AutoencoderKL(**VAE).eval()
    clip = CLIPTextModel(CLIPTextConfig(**CLIP)).eval()
    t5 = T5EncoderModel(T5Config(**T5)).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    original = {k: v.contiguous() for k, v in to_original(sd).items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(original, str(models / "diffusion_models" / LAYOUTS["original"]))
    save_file({"model.diffusion_model." + k: v for k, v in original.items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file({("" if k.startswith("text_model.") else "text_model.") + k: v.contiguous()  # ComfyUI's names
               for k, v in clip.state_dict().items()},
              str(models / "text_encoders" / "clip_l.safetensors"))
    t5_state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(models / "text_encoders" / "t5xxl_fp16.safetensors"))
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()},
              str(models / "vae" / "ae.safetensors"))
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    t5_tokenizer_files(models / "checkpoints" / "t5_tokenizer")
    whole = {"model.diffusion_model." + k: v for k, v in original.items()}
    whole.update({"text_encoders.clip_l.transformer.text_model." + k.removeprefix("text_model."): v.contiguous()
                  for k, v in clip.state_dict().items()})
    whole.update({"text_encoders.t5xxl.transformer." + k: v for k, v in t5_state.items()})
    whole.update({"vae." + k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()})
    save_file(whole, str(models / "checkpoints" / CHECKPOINT))
    return TinyFlux(transformer, vae, clip, t5, home)
