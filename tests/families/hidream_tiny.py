"""A tiny random-weight HiDream-I1 (MoE transformer, long CLIP-L and CLIP-G with projections, T5, Llama-3.1-style
decoder + a tiny byte-level BPE tokenizer, Flux's 16-channel VAE), saved under ComfyUI_examples' file names.

Files under a nodegraph home: ``diffusion_models/hidream_i1_full_fp16.safetensors`` (ComfyUI's layout:
``model.diffusion_model.`` + the original names) and ``hidream_i1_dev_bf16.safetensors`` (diffusers' names at the
root); ``text_encoders/clip_l_hidream``, ``clip_g_hidream`` (``text_model.*`` + ``text_projection``),
``t5xxl_fp8_e4m3fn_scaled`` + ``t5_tokenizer/``, ``llama_3.1_8b_instruct_fp8_scaled`` (``model.*`` + ``lm_head``) +
``tokenizer/``; ``vae/ae.safetensors`` (LDM names). ``HiDreamImagePipeline`` over the same modules is the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TRANSFORMER = dict(patch_size=2, in_channels=16, out_channels=16, num_layers=2, num_single_layers=2,
                   attention_head_dim=32, num_attention_heads=2, caption_channels=[40, 32], text_emb_dim=80,
                   num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[16, 8, 8],
                   max_resolution=[128, 128], llama_layers=[0, 1, 2, 3])
CLIP_L = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
              max_position_embeddings=128, hidden_act="quick_gelu", projection_dim=32, bos_token_id=0,
              eos_token_id=2, pad_token_id=1)
CLIP_G = dict(CLIP_L, hidden_size=48, projection_dim=48, hidden_act="gelu", intermediate_size=80, num_hidden_layers=3)
T5 = dict(vocab_size=64, d_model=40, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
          relative_attention_max_distance=128, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
          use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
           latent_channels=16, norm_num_groups=32, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
           use_quant_conv=False, use_post_quant_conv=False)
LAYOUTS = {"comfyui": "hidream_i1_full_fp16.safetensors", "diffusers": "hidream_i1_dev_bf16.safetensors"}
ENCODERS = ("clip_l_hidream.safetensors", "clip_g_hidream.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors",
            "llama_3.1_8b_instruct_fp8_scaled.safetensors")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


@dataclass
class TinyHiDream:
    """The tiny modules and where their files are."""

    transformer: Any
    clip_l: Any
    clip_g: Any
    t5: Any
    llama: Any
    vae: Any
    home: Path

    def pipeline(self, size: int) -> Any:
        """HiDreamImagePipeline over the same modules and tokenizers, a plain scheduler (sigmas are passed in) and
        its default size ``size`` (the pipeline scales every request to that area)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline
        from transformers import PreTrainedTokenizerFast, T5TokenizerFast

        from nodegraph.diffusion.loading import clip_tokenizer

        folder = self.home / "models" / "text_encoders"
        pipe = HiDreamImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False), vae=self.vae,
            text_encoder=self.clip_l, tokenizer=clip_tokenizer(max_length=128), text_encoder_2=self.clip_g,
            tokenizer_2=clip_tokenizer("!", 128), text_encoder_3=self.t5,
            tokenizer_3=T5TokenizerFast.from_pretrained(str(folder / "t5_tokenizer")), text_encoder_4=self.llama,
            tokenizer_4=PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer")),
            transformer=self.transformer)
        pipe.default_sample_size = size // 8
        return pipe


def llama_tokenizer_files(folder: Path) -> Any:
    """A tiny byte-level BPE with Llama-3's special tokens (start token prepended, <|eot_id|> as the end), saved as
    tokenizer.json + tokenizer_config.json in ``folder``."""
    from flux_tiny import WORDS
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   model_max_length=131072)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


def build(home: Path, seed: int = 0) -> TinyHiDream:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKL, HiDreamImageTransformer2DModel
    from family_kit import jitter, model_folders
    from flux_tiny import t5_tokenizer_files
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5EncoderModel,
    )

    from nodegraph.diffusion.hidream.detect import shipped_config
    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    transformer = HiDreamImageTransformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so every weight matters
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    tok = llama_tokenizer_files(models / "text_encoders" / "tokenizer")
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).eval()
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval()
    t5 = T5EncoderModel(T5Config(**T5)).eval()
    values = shipped_config("llama")
    values.update(LLAMA, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    llama = LlamaForCausalLM(LlamaConfig(**values)).eval()
    vae = AutoencoderKL(**VAE).eval()
    for module in (clip_l, clip_g, t5, llama):
        jitter(module)
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    te = models / "text_encoders"
    for module, name in ((clip_l, ENCODERS[0]), (clip_g, ENCODERS[1]), (llama, ENCODERS[3])):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(te / name))
    save_file({k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
              str(te / ENCODERS[2]))
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()},
              str(models / "vae" / "ae.safetensors"))
    return TinyHiDream(transformer, clip_l, clip_g, t5, llama, vae, home)
