"""Tiny random-weight Z-Image and Lumina 2 (NextDiT transformers, Qwen3 and Gemma 2 text encoders + tokenizers,
Flux's 16-channel VAE), saved under the file names of ComfyUI's default graph and examples:

- ``diffusion_models/z_image_turbo_bf16.safetensors`` (ComfyUI's layout: fused ``qkv``, ``x_embedder``…) and
  ``z_image_tiny_diffusers.safetensors`` (diffusers' names); ``lumina_2_model_bf16.safetensors`` (ComfyUI's) and
  ``lumina2_tiny_diffusers.safetensors``;
- ``text_encoders/qwen_3_4b.safetensors`` (``model.*`` names) + ``qwen3_tokenizer/`` (a tiny byte-level BPE with
  Qwen's special tokens and a Qwen3-style chat template); ``gemma_2_2b_fp16.safetensors`` (``model.*`` names and
  the ``spiece_model`` tensor, a tiny SentencePiece model, as ComfyUI's repackaged file);
- ``vae/ae.safetensors`` (Flux's LDM names);
- ``checkpoints/lumina_2.safetensors``: all of Lumina 2 in one file, as ComfyUI's (``model.diffusion_model.``,
  ``text_encoders.gemma2_2b.transformer.`` + ``…spiece_model``, ``vae.``).

``ZImagePipeline``/``Lumina2Pipeline`` over the same modules are the numerical oracles.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter, model_folders

Z_IMAGE = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2, n_refiner_layers=1,
               n_heads=2, n_kv_heads=2, cap_feat_dim=40, axes_dims=[8, 12, 12], axes_lens=[1536, 512, 512],
               rope_theta=256.0, t_scale=1000.0)
LUMINA2 = dict(patch_size=2, in_channels=16, hidden_size=48, num_layers=2, num_refiner_layers=1,
               num_attention_heads=2, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None,
               axes_dim_rope=(8, 8, 8), axes_lens=(300, 512, 512), cap_feat_dim=32)
QWEN3 = dict(vocab_size=384, hidden_size=40, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
             num_key_value_heads=1, head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-6,
             tie_word_embeddings=True, rope_theta=1_000_000)  # Qwen3-4B's rotary base
GEMMA2 = dict(vocab_size=304, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
              num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, max_position_embeddings=1024,
              pad_token_id=0, eos_token_id=1, bos_token_id=2)
Z_FILES = {"comfyui": "z_image_turbo_bf16.safetensors", "diffusers": "z_image_tiny_diffusers.safetensors"}
L_FILES = {"comfyui": "lumina_2_model_bf16.safetensors", "diffusers": "lumina2_tiny_diffusers.safetensors"}
#: Flux's 16-channel autoencoder, scaled down (its scale and shift as Flux's ae)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
           up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32], layers_per_block=1,
           latent_channels=16, norm_num_groups=32, sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
           use_quant_conv=False, use_post_quant_conv=False)
QWEN3_FILE, GEMMA_FILE, VAE_FILE = "qwen_3_4b.safetensors", "gemma_2_2b_fp16.safetensors", "ae.safetensors"
CHECKPOINT = "lumina_2.safetensors"  # ComfyUI's all-in-one Lumina 2 file name
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
                 "{% endif %}")
CORPUS = ("You are an assistant designed to generate superior images with the superior degree of image-text "
          "alignment based on textual prompts or user prompts. <Prompt Start> a photo of the red cat on the sky "
          "green blue tree blurry ugly bad anime girl fox tail")


@dataclass
class TinyLumina:
    """The tiny modules and where their files are."""

    z_image: Any
    lumina2: Any
    qwen3: Any
    gemma2: Any
    qwen_tokenizer: Any
    spiece: bytes
    vae: Any
    home: Path

    def gemma_tokenizer(self) -> Any:
        """Gemma's tokenizer from the tiny SentencePiece model, right-padded (Lumina2Pipeline pads to 256 and reads
        the caption's first tokens)."""
        import tempfile

        from transformers import GemmaTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "tokenizer.model").write_bytes(self.spiece)
            tok = GemmaTokenizer.from_pretrained(tmp, add_bos_token=True)
        tok.padding_side = "right"
        return tok

    def z_image_pipeline(self) -> Any:
        """ZImagePipeline over the same modules, with an unshifted scheduler: sigmas are passed in."""
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                              vae=self.vae, text_encoder=self.qwen3, tokenizer=self.qwen_tokenizer,
                              transformer=self.z_image)

    def lumina2_pipeline(self) -> Any:
        """Lumina2Pipeline over the same modules, with an unshifted scheduler: sigmas are passed in."""
        from diffusers import FlowMatchEulerDiscreteScheduler, Lumina2Pipeline

        return Lumina2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                               vae=self.vae, text_encoder=self.gemma2, tokenizer=self.gemma_tokenizer(),
                               transformer=self.lumina2)


def qwen_tokenizer(folder: Path) -> Any:
    """A tiny byte-level BPE with Qwen's special tokens and a Qwen3-style chat template, saved in ``folder``."""
    from family_kit import byte_level_bpe
    from transformers import Qwen2TokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = byte_level_bpe(CORPUS, specials)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                              pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


def spiece_model() -> bytes:
    """A tiny SentencePiece BPE model with Gemma's ids (pad 0, eos 1, bos 2, unk 3) and no dummy prefix (300 pieces;
    transformers adds a `<mask>` as id 300, hence the model's 304 rows)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([CORPUS] * 20), model_writer=out, vocab_size=300,
                                   model_type="bpe", pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
                                   eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", minloglevel=2,
                                   add_dummy_prefix=False, byte_fallback=True)
    return out.getvalue()


def z_image_to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's Z-Image names (``comfy/ldm/lumina/model.py``) for a diffusers state: fused qkv, x_embedder…"""
    out = {}
    for key, value in state.items():
        if key.endswith(("attention.to_k.weight", "attention.to_v.weight")):
            continue
        if key.endswith("attention.to_q.weight"):
            base = key[: -len("to_q.weight")]
            value = torch.cat([value, state[base + "to_k.weight"], state[base + "to_v.weight"]])
            key = base + "qkv.weight"
        key = (key.replace("all_x_embedder.2-1.", "x_embedder.").replace("all_final_layer.2-1.", "final_layer.")
               .replace("attention.to_out.0.", "attention.out.").replace("attention.norm_q.", "attention.q_norm.")
               .replace("attention.norm_k.", "attention.k_norm."))
        out[key] = value.contiguous()
    return out


_L_TOP = {"time_caption_embed.caption_embedder.": "cap_embedder.",
          "time_caption_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
          "time_caption_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
          "norm_out.linear_1.": "final_layer.adaLN_modulation.1.", "norm_out.linear_2.": "final_layer.linear."}
_L_BLOCK = {"attn.to_out.0": "attention.out", "attn.norm_q": "attention.q_norm", "attn.norm_k": "attention.k_norm",
            "feed_forward.linear_1": "feed_forward.w1", "feed_forward.linear_2": "feed_forward.w2",
            "feed_forward.linear_3": "feed_forward.w3", "norm1.norm": "attention_norm1",
            "norm1.linear": "adaLN_modulation.1", "norm2": "attention_norm2"}


def lumina2_to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's/original Lumina 2 names for a diffusers state (with the unused ``norm_final`` of the original)."""
    out = {}
    for key, value in state.items():
        if key.endswith(("attn.to_k.weight", "attn.to_v.weight")):
            continue
        if key.endswith("attn.to_q.weight"):
            base = key[: -len("to_q.weight")]
            value = torch.cat([value, state[base + "to_k.weight"], state[base + "to_v.weight"]])
            key = base[: -len("attn.")] + "attention.qkv.weight"
        for a, b in _L_TOP.items():
            if key.startswith(a):
                key = b + key[len(a):]
        m = re.match(r"^(layers|noise_refiner|context_refiner)\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            inner = m[3]
            if m[1] == "context_refiner" and inner == "norm1":
                inner = "attention_norm1"
            key = f"{m[1]}.{m[2]}.{_L_BLOCK.get(inner, inner)}.{m[4]}"
        out[key] = value.contiguous()
    out["norm_final.weight"] = torch.ones(state["x_embedder.weight"].shape[0])
    return out


def _randomised(module: Any) -> Any:
    jitter(module)  # random norms and modulation so every weight matters
    return module.eval()


def build(home: Path, seed: int = 0) -> TinyLumina:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKL, Lumina2Transformer2DModel, ZImageTransformer2DModel
    from safetensors.torch import save_file
    from transformers import Gemma2Config, Gemma2Model, Qwen3Config, Qwen3Model

    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    z_image = _randomised(ZImageTransformer2DModel(**Z_IMAGE))
    lumina2 = _randomised(Lumina2Transformer2DModel(**LUMINA2))
    qwen3 = Qwen3Model(Qwen3Config(**QWEN3)).eval()
    gemma2 = Gemma2Model(Gemma2Config(**GEMMA2)).eval()
    vae = AutoencoderKL(**VAE).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    z_sd = {k: v.contiguous() for k, v in z_image.state_dict().items()}
    save_file(z_sd, str(models / "diffusion_models" / Z_FILES["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in z_image_to_comfyui(z_sd).items()},
              str(models / "diffusion_models" / Z_FILES["comfyui"]))
    l_sd = {k: v.contiguous() for k, v in lumina2.state_dict().items()}
    save_file(l_sd, str(models / "diffusion_models" / L_FILES["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in lumina2_to_comfyui(l_sd).items()},
              str(models / "diffusion_models" / L_FILES["comfyui"]))
    tok = qwen_tokenizer(models / "text_encoders" / "qwen3_tokenizer")
    save_file({"model." + k: v.contiguous() for k, v in qwen3.state_dict().items()},
              str(models / "text_encoders" / QWEN3_FILE))
    spiece = spiece_model()
    gemma = {"model." + k: v.contiguous() for k, v in gemma2.state_dict().items()}
    gemma["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(gemma, str(models / "text_encoders" / GEMMA_FILE))
    ldm_vae = {k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()}
    save_file(ldm_vae, str(models / "vae" / VAE_FILE))
    whole = {"model.diffusion_model." + k: v for k, v in lumina2_to_comfyui(l_sd).items()}
    whole.update({"text_encoders.gemma2_2b.transformer." + k: v for k, v in gemma.items() if k != "spiece_model"})
    whole["text_encoders.gemma2_2b.spiece_model"] = gemma["spiece_model"]
    whole.update({"vae." + k: v for k, v in ldm_vae.items()})
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(whole, str(models / "checkpoints" / CHECKPOINT))
    return TinyLumina(z_image, lumina2, qwen3, gemma2, tok, spiece, vae, home)
