"""A tiny random-weight HunyuanVideo 1.0 (transformer, CLIP-L, Llama + byte-level BPE tokenizer, video VAE), saved as
ComfyUI expects.

Files under a nodegraph home: ``diffusion_models/`` in ComfyUI's layout (its module names under
``model.diffusion_model.``), the original Tencent layout and diffusers'; ``text_encoders/clip_l.safetensors``,
``text_encoders/llava_llama3_tiny.safetensors`` (``model.*`` names, as ComfyUI's llava_llama3 files) with a tiny
Llama-3-style tokenizer in ``text_encoders/tokenizer/``; ``vae/`` in ComfyUI's LDM-style layout and diffusers'; and a tiny "v1 (concat)" image-to-video transformer.
``HunyuanVideoPipeline`` over the same modules is the numerical oracle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, jitter, model_folders

HIDDEN = 128  # one head of 128 (every HunyuanVideo release has 128-wide heads)
TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=1, attention_head_dim=128, num_layers=1,
                   num_single_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
                   text_embed_dim=128, pooled_projection_dim=64, guidance_embeds=True, rope_axes_dim=(16, 56, 56))
LLAMA = dict(hidden_size=128, intermediate_size=96, num_hidden_layers=3, num_attention_heads=1, num_key_value_heads=1,
             head_dim=128, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=500000.0)
CLIP = dict(vocab_size=49408, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64, bos_token_id=0, eos_token_id=2,
            pad_token_id=1)
VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8)
#: the "v1 (concat)" image-to-video release: latent, image latent and mask in (33 channels), no embedded guidance
I2V = dict(TRANSFORMER, in_channels=33, guidance_embeds=False, image_condition_type="latent_concat")
I2V_FILE = "hunyuan-video-i2v-tiny-comfyui.safetensors"
LAYOUTS = {"comfyui": "hunyuan-video-tiny-comfyui.safetensors", "original": "hunyuan-video-tiny-original.safetensors",
           "diffusers": "hunyuan-video-tiny-diffusers.safetensors"}
VAE_FILES = {"comfyui": "hunyuan_video_vae_tiny.safetensors", "diffusers": "hunyuan-video-vae-diffusers.safetensors"}
LLAMA_FILE = "llava_llama3_tiny.safetensors"
SPECIAL = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
WORDS = "a photo of the cat dog red green blue circle walking running video river mountain sky".split()
#: Llama 3's pre-tokenizer split (newline runs stay one piece, so "\n\n" before the prompt is one token).
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")

_R = r"context_embedder\.token_refiner\.refiner_blocks\.(\d+)\."
#: diffusers → ComfyUI names (module paths of comfy/ldm/hunyuan_video/model.py), written independently of the loader.
_INVERSE = (
    (r"x_embedder\.proj\.", "img_in.proj."), (r"time_text_embed\.timestep_embedder\.linear_(\d)\.", "time_in.{io}."),
    (r"time_text_embed\.text_embedder\.linear_(\d)\.", "vector_in.{io}."),
    (r"time_text_embed\.guidance_embedder\.linear_(\d)\.", "guidance_in.{io}."),
    (r"context_embedder\.proj_in\.", "txt_in.input_embedder."),
    (r"context_embedder\.time_text_embed\.timestep_embedder\.linear_(\d)\.", "txt_in.t_embedder.{io}."),
    (r"context_embedder\.time_text_embed\.text_embedder\.linear_(\d)\.", "txt_in.c_embedder.{io}."),
    (_R + r"(norm1|norm2)\.", "txt_in.individual_token_refiner.blocks.{0}.{1}."),
    (_R + r"attn\.to_out\.0\.", "txt_in.individual_token_refiner.blocks.{0}.self_attn.proj."),
    (_R + r"ff\.net\.0\.proj\.", "txt_in.individual_token_refiner.blocks.{0}.mlp.0."),
    (_R + r"ff\.net\.2\.", "txt_in.individual_token_refiner.blocks.{0}.mlp.2."),
    (_R + r"norm_out\.linear\.", "txt_in.individual_token_refiner.blocks.{0}.adaLN_modulation.1."),
    (r"transformer_blocks\.(\d+)\.norm1\.linear\.", "double_blocks.{0}.img_mod.lin."),
    (r"transformer_blocks\.(\d+)\.norm1_context\.linear\.", "double_blocks.{0}.txt_mod.lin."),
    (r"transformer_blocks\.(\d+)\.attn\.norm_q\.weight", "double_blocks.{0}.img_attn.norm.query_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_k\.weight", "double_blocks.{0}.img_attn.norm.key_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_q\.weight", "double_blocks.{0}.txt_attn.norm.query_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.norm_added_k\.weight", "double_blocks.{0}.txt_attn.norm.key_norm.scale"),
    (r"transformer_blocks\.(\d+)\.attn\.to_out\.0\.", "double_blocks.{0}.img_attn.proj."),
    (r"transformer_blocks\.(\d+)\.attn\.to_add_out\.", "double_blocks.{0}.txt_attn.proj."),
    (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj\.", "double_blocks.{0}.img_mlp.0."),
    (r"transformer_blocks\.(\d+)\.ff\.net\.2\.", "double_blocks.{0}.img_mlp.2."),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj\.", "double_blocks.{0}.txt_mlp.0."),
    (r"transformer_blocks\.(\d+)\.ff_context\.net\.2\.", "double_blocks.{0}.txt_mlp.2."),
    (r"single_transformer_blocks\.(\d+)\.proj_out\.", "single_blocks.{0}.linear2."),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_q\.weight", "single_blocks.{0}.norm.query_norm.scale"),
    (r"single_transformer_blocks\.(\d+)\.attn\.norm_k\.weight", "single_blocks.{0}.norm.key_norm.scale"),
    (r"single_transformer_blocks\.(\d+)\.norm\.linear\.", "single_blocks.{0}.modulation.lin."),
    (r"proj_out\.", "final_layer.linear."),
)
#: fused tensors: (diffusers parts, in order) → ComfyUI name
_FUSED = ((_R + r"attn\.to_([qkv])\.", "txt_in.individual_token_refiner.blocks.{0}.self_attn.qkv.", "qkv"),
          (r"transformer_blocks\.(\d+)\.attn\.to_([qkv])\.", "double_blocks.{0}.img_attn.qkv.", "qkv"),
          (r"transformer_blocks\.(\d+)\.attn\.add_([qkv])_proj\.", "double_blocks.{0}.txt_attn.qkv.", "qkv"),
          (r"single_transformer_blocks\.(\d+)\.(?:attn\.to_([qkv])|(proj_mlp))\.", "single_blocks.{0}.linear1.",
           "qkvm"))


def to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's names for a diffusers HunyuanVideo transformer state dict."""
    out: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        if key.startswith("norm_out.linear."):  # diffusers (scale, shift) → ComfyUI (shift, scale)
            scale, shift = value.chunk(2, dim=0)
            out["final_layer.adaLN_modulation.1." + key.rsplit(".", 1)[1]] = torch.cat([shift, scale])
            continue
        for pattern, target, order in _FUSED:
            m = re.match(pattern + r"(weight|bias)$", key)
            if m:
                part = m.group(2) or "m"
                parts.setdefault(target.format(m.group(1)) + m.group(m.lastindex), {})[part] = (value, order)
                break
        else:
            for pattern, target in _INVERSE:
                m = re.match(pattern, key)
                if m:
                    tail = key[m.end():]
                    groups = m.groups()
                    io = {"1": "in_layer", "2": "out_layer"}.get(groups[0] if groups else "", "")
                    name = target.format(*groups, io=io) + tail
                    out[name] = value
                    break
            else:
                raise AssertionError(f"no ComfyUI name for {key}")
    for name, got in parts.items():
        order = next(iter(got.values()))[1]
        out[name] = torch.cat([got[p][0] for p in ("q", "k", "v", "m")[: len(order)]], dim=0)
    return out


def to_original(comfy: dict[str, Any]) -> dict[str, Any]:
    """The original Tencent names for ComfyUI-named tensors (what ComfyUI's model config renames back)."""
    subs = (("_mod.lin.", "_mod.linear."), ("_attn.qkv.", "_attn_qkv."), ("mlp.0.", "mlp.fc1."), ("mlp.2.", "mlp.fc2."),
            ("_attn.norm.query_norm.scale", "_attn_q_norm.weight"), ("_attn.norm.key_norm.scale", "_attn_k_norm.weight"),
            (".norm.query_norm.scale", ".q_norm.weight"), (".norm.key_norm.scale", ".k_norm.weight"),
            ("_attn.proj.", "_attn_proj."), (".modulation.lin.", ".modulation.linear."),
            ("txt_in.t_embedder.in_layer.", "txt_in.t_embedder.mlp.0."),
            ("txt_in.t_embedder.out_layer.", "txt_in.t_embedder.mlp.2."),
            ("txt_in.c_embedder.in_layer.", "txt_in.c_embedder.linear_1."),
            ("txt_in.c_embedder.out_layer.", "txt_in.c_embedder.linear_2."),
            ("time_in.in_layer.", "time_in.mlp.0."), ("time_in.out_layer.", "time_in.mlp.2."),
            ("guidance_in.in_layer.", "guidance_in.mlp.0."), ("guidance_in.out_layer.", "guidance_in.mlp.2."))
    out = {}
    for key, value in comfy.items():
        for a, b in subs:
            key = key.replace(a, b)
        out[key] = value
    return out


def vae_to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's LDM-style names for a diffusers HunyuanVideo VAE (attention projections as 1×1×1 convolutions)."""
    ups = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out = {}
    for key, value in state.items():
        name = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        name = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", name)
        name = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", name)
        name = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{ups - 1 - int(m.group(1))}.block.", name)
        name = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"up.{ups - 1 - int(m.group(1))}.upsample.", name)
        name = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", name)
        for a, b in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            name = name.replace("mid_block.attentions.0." + a + ".", "mid.attn_1." + b + ".")
        if ".mid.attn_1." in name and name.endswith("weight") and value.dim() == 2:
            value = value.reshape(*value.shape, 1, 1, 1)
        out[name] = value
    return out


def llama_tokenizer_files(folder: Path) -> Any:
    """A tiny Llama-3-style tokenizer (byte-level BPE, Llama 3's split, the header/eot special tokens, a start
    token prepended) in ``folder``; returns it as a transformers tokenizer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    from nodegraph.diffusion.hunyuan_video.text import TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [TEMPLATE.format(" ".join(WORDS[i:] + WORDS[:i])) for i in range(len(WORDS))] * 4
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL),
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
         "eos_token": "<|end_of_text|>", "pad_token": "<|end_of_text|>", "model_max_length": 4096}))
    return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)


@dataclass
class TinyHunyuanVideo:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    clip: Any
    llama: Any
    tokenizer: Any
    home: Path
    i2v: Any = None

    def pipeline(self, shift: float, steps: int) -> Any:
        """HunyuanVideoPipeline over the same modules, its Euler schedule on ComfyUI's "simple" sigmas."""
        import functools

        import numpy as np
        from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

        from nodegraph.diffusion.loading import clip_tokenizer

        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps = functools.partial(scheduler.set_timesteps,
                                                    sigmas=np.linspace(1.0, 1.0 / steps, steps))
        return HunyuanVideoPipeline(text_encoder=self.llama, tokenizer=self.tokenizer, transformer=self.transformer,
                                    vae=self.vae, scheduler=scheduler, text_encoder_2=self.clip,
                                    tokenizer_2=clip_tokenizer())


def build(home: Path) -> TinyHunyuanVideo:
    """Build the tiny modules with a fixed seed and save every file under ``home/models``."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    transformer = HunyuanVideoTransformer3DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so a wrong mapping shows
    vae = AutoencoderKLHunyuanVideo(**VAE).eval()
    clip = CLIPTextModel(CLIPTextConfig(**CLIP)).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    tokenizer = llama_tokenizer_files(models / "text_encoders" / "tokenizer")
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), **LLAMA)).eval()
    sd = cloned_state(transformer)
    comfy = {k: v.contiguous() for k, v in to_comfyui(sd).items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in comfy.items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file(to_original(comfy), str(models / "diffusion_models" / LAYOUTS["original"]))
    save_file({("" if k.startswith("text_model.") else "text_model.") + k: v.contiguous()
               for k, v in clip.state_dict().items()}, str(models / "text_encoders" / "clip_l.safetensors"))
    save_file({"model." + k: v.contiguous() for k, v in llama.state_dict().items()},
              str(models / "text_encoders" / LLAMA_FILE))
    torch.manual_seed(1)
    i2v = HunyuanVideoTransformer3DModel(**I2V).eval()
    jitter(i2v)
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in to_comfyui(i2v.state_dict()).items()},
              str(models / "diffusion_models" / I2V_FILE))
    vsd = cloned_state(vae)
    save_file(vsd, str(models / "vae" / VAE_FILES["diffusers"]))
    save_file({k: v.contiguous() for k, v in vae_to_comfyui(vsd).items()}, str(models / "vae" / VAE_FILES["comfyui"]))
    return TinyHunyuanVideo(transformer=transformer, vae=vae, clip=clip, llama=llama, tokenizer=tokenizer, home=home,
                            i2v=i2v)
