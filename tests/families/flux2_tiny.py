"""A tiny random-weight Flux.2 [dev] (transformer, Mistral 3 text encoder + tekken vocabulary, 32-channel VAE with
batch-norm statistics), saved under the file names of ComfyUI's flux2 example: ``diffusion_models/`` in ComfyUI's
(Black Forest Labs') layout at the root and under ``model.diffusion_model.``, and in diffusers' layout;
``text_encoders/mistral_3_small_flux2_fp8`` (ComfyUI's names, the tekken vocabulary inside as ``tekken_model``) and
a transformers-layout ``Mistral3ForConditionalGeneration`` file with a ``tokenizer/`` folder beside it;
``vae/flux2-vae`` (original names) and a diffusers-layout VAE. ``Flux2Pipeline`` over the same modules is the oracle.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import model_folders

TRANSFORMER = dict(patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=32,
                   num_attention_heads=2, joint_attention_dim=96, axes_dims_rope=[8, 8, 8, 8], guidance_embeds=True)
#: 4 layers: hidden states 1, 2, 3 are stacked (n/4, n/2, 3n/4, as 10/20/30 of the released 40)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
            head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=1e9, sliding_window=None)
TEXT_LAYERS = (1, 2, 3)
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=16, head_dim=8)
VAE = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, latent_channels=32, norm_num_groups=32)
KLEIN = dict(TRANSFORMER, guidance_embeds=False)
QWEN3 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True)
KLEIN_FILE, QWEN3_FILE = "flux2_klein_tiny.safetensors", "qwen_3_4b.safetensors"
LAYOUTS = {"comfyui": "flux2_dev_fp8mixed.safetensors", "prefixed": "flux2_dev_prefixed.safetensors",
           "diffusers": "flux2_dev_diffusers.safetensors"}
TEXT_ENCODER, TEXT_ENCODER_HF = "mistral_3_small_flux2_fp8.safetensors", "mistral3_transformers.safetensors"
VAE_FILE, VAE_DIFFUSERS = "flux2-vae.safetensors", "flux2_vae_diffusers.safetensors"
SPECIALS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
            "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]")
MERGES = ("th", "the", "he", "in", "an", "at", "er", "on", "re", "es", "ca", "cat", "ed", "or", "ar", "st", "ing")


@dataclass
class TinyFlux2:
    """The tiny modules and where their files are."""

    transformer: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    home: Path

    def klein_pipeline(self) -> Any:
        """Flux2KleinPipeline (not step-distilled: cfg with an empty negative prompt) over the same modules."""
        from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        return Flux2KleinPipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                  tokenizer=self.tokenizer, transformer=self.transformer)

    def pipeline(self, dynamic: bool = True) -> Any:
        """Flux2Pipeline over the same modules; ``dynamic`` gives FLUX.2-dev's scheduler (its empirical mu),
        otherwise an unshifted one for passing sigmas in."""
        from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline

        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
                                                    time_shift_type="exponential") if dynamic else \
            FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        return Flux2Pipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.text_encoder,
                             tokenizer=self.tokenizer, transformer=self.transformer)


def tekken_json() -> bytes:
    """A tiny tekken vocabulary (Mistral's format): the 20 control tokens, the 256 bytes and a few merges."""
    tokens = [bytes([i]) for i in range(256)] + [m.encode() for m in MERGES]
    vocab = [{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": None}
             for i, t in enumerate(tokens)]
    specials = [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(SPECIALS)]
    config = {"pattern": r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
              "num_vocab_tokens": len(tokens), "default_vocab_size": len(tokens) + len(SPECIALS),
              "default_num_special_tokens": len(SPECIALS), "version": "v7"}
    return json.dumps({"config": config, "vocab": vocab, "special_tokens": specials}).encode()


def to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """Black Forest Labs'/ComfyUI's names for a diffusers ``Flux2Transformer2DModel`` state (the inverse of
    diffusers' ``convert_flux2_transformer_checkpoint_to_diffusers``)."""
    fixed = {"x_embedder": "img_in", "context_embedder": "txt_in", "proj_out": "final_layer.linear",
             "time_guidance_embed.timestep_embedder.linear_1": "time_in.in_layer",
             "time_guidance_embed.timestep_embedder.linear_2": "time_in.out_layer",
             "time_guidance_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
             "time_guidance_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
             "double_stream_modulation_img.linear": "double_stream_modulation_img.lin",
             "double_stream_modulation_txt.linear": "double_stream_modulation_txt.lin",
             "single_stream_modulation.linear": "single_stream_modulation.lin"}
    double = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
              "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
              "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale", "attn.to_out.0.weight": "img_attn.proj.weight",
              "attn.to_add_out.weight": "txt_attn.proj.weight", "ff.linear_in.weight": "img_mlp.0.weight",
              "ff.linear_out.weight": "img_mlp.2.weight", "ff_context.linear_in.weight": "txt_mlp.0.weight",
              "ff_context.linear_out.weight": "txt_mlp.2.weight"}
    single = {"attn.to_qkv_mlp_proj.weight": "linear1.weight", "attn.to_out.weight": "linear2.weight",
              "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale"}
    out: dict[str, Any] = {}
    for key, value in state.items():
        base, _, param = key.rpartition(".")
        if base in fixed:
            out[f"{fixed[base]}.{param}"] = value
        elif key == "norm_out.linear.weight":
            scale, shift = value.chunk(2, dim=0)
            out["final_layer.adaLN_modulation.1.weight"] = torch.cat([shift, scale])
        elif key.startswith("transformer_blocks."):
            _, n, rest = key.split(".", 2)
            if rest in double:
                out[f"double_blocks.{n}.{double[rest]}"] = value
        elif key.startswith("single_transformer_blocks."):
            _, n, rest = key.split(".", 2)
            out[f"single_blocks.{n}.{single[rest]}"] = value
    for n in {k.split(".")[1] for k in state if k.startswith("transformer_blocks.")}:
        p = f"transformer_blocks.{n}.attn."
        out[f"double_blocks.{n}.img_attn.qkv.weight"] = torch.cat([state[p + f"to_{x}.weight"] for x in "qkv"])
        out[f"double_blocks.{n}.txt_attn.qkv.weight"] = torch.cat([state[p + f"add_{x}_proj.weight"] for x in "qkv"])
    return {k: v.contiguous() for k, v in out.items()}


def _randomise(module: Any, scale: float = 0.02) -> None:
    with torch.no_grad():  # random norms and modulation so every weight matters
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def build(home: Path, seed: int = 0) -> TinyFlux2:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import Flux2Transformer2DModel
    from safetensors.torch import save_file
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
    )

    from nodegraph.diffusion.flux2.loading import tekken_tokenizer
    from nodegraph.diffusion.flux2.text import MISTRAL_TEMPLATE

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(**TRANSFORMER).eval()
    _randomise(transformer)
    tekken = tekken_json()
    tok = tekken_tokenizer(torch.frombuffer(bytearray(tekken), dtype=torch.uint8))
    tok.chat_template = MISTRAL_TEMPLATE
    config = Mistral3Config(text_config=MistralConfig(vocab_size=len(tok), pad_token_id=11, **TEXT),
                            vision_config=PixtralVisionConfig(**VISION), image_token_index=10,
                            spatial_merge_size=1, vision_feature_layer=-1)
    text_encoder = Mistral3ForConditionalGeneration(config).eval()
    _randomise(text_encoder, 0.05)
    vae = tiny_vae()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    comfy = to_comfyui(sd)
    save_file(comfy, str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file({"model.diffusion_model." + k: v for k, v in comfy.items()},
              str(models / "diffusion_models" / LAYOUTS["prefixed"]))
    te = {k[len("model.language_model."):]: v.contiguous() for k, v in text_encoder.state_dict().items()
          if k.startswith("model.language_model.")}
    te = {"model." + k: v for k, v in te.items()}
    te["tekken_model"] = torch.frombuffer(bytearray(tekken), dtype=torch.uint8).clone()
    save_file(te, str(models / "text_encoders" / TEXT_ENCODER))
    save_file({k: v.clone().contiguous() for k, v in text_encoder.state_dict().items()},
              str(models / "text_encoders" / TEXT_ENCODER_HF))
    tok.save_pretrained(str(models / "text_encoders" / "tokenizer"))
    save_vae(vae, models / "vae")
    return TinyFlux2(transformer, text_encoder, tok, vae, home)


def tiny_vae() -> Any:
    """The tiny Flux.2 VAE with non-trivial batch-norm statistics."""
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(**VAE).eval()
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.randn(128) * 0.1)
        vae.bn.running_var.copy_(torch.rand(128) * 0.5 + 0.75)
    return vae


def save_vae(vae: Any, folder: Path) -> None:
    """The VAE in the original layout (``VAE_FILE``) and diffusers' (``VAE_DIFFUSERS``)."""
    from safetensors.torch import save_file

    from nodegraph.diffusion.ldm import vae_to_ldm

    vsd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    original = vae_to_ldm(dict(vsd), 4, prefix="")
    original.update({k: v for k, v in vsd.items() if k.startswith("bn.")})
    save_file({k: v.contiguous() for k, v in original.items()}, str(folder / VAE_FILE))
    save_file(vsd, str(folder / VAE_DIFFUSERS))


def build_klein(home: Path, seed: int = 0) -> TinyFlux2:
    """A tiny Flux.2 Klein (no guidance embedding; Qwen3 text encoder with a ``tokenizer/`` folder beside it)."""
    from diffusers import Flux2Transformer2DModel
    from qwen_tiny import tokenizer as qwen_tokenizer
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from nodegraph.diffusion.flux2.text import QWEN3_TEMPLATE

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(**KLEIN).eval()
    _randomise(transformer)
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    folder = models / "text_encoders" / "tokenizer"
    tok = qwen_tokenizer(folder)
    tok.chat_template = QWEN3_TEMPLATE
    tok.save_pretrained(str(folder))
    text_encoder = Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tok), **QWEN3)).eval()
    _randomise(text_encoder, 0.05)
    vae = tiny_vae()
    save_file(to_comfyui({k: v.contiguous() for k, v in transformer.state_dict().items()}),
              str(models / "diffusion_models" / KLEIN_FILE))
    save_file({k: v.clone().contiguous() for k, v in text_encoder.state_dict().items()},
              str(models / "text_encoders" / QWEN3_FILE))
    save_vae(vae, models / "vae")
    return TinyFlux2(transformer, text_encoder, tok, vae, home)
