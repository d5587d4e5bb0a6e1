"""A tiny random-weight Wan 2.1 (transformer, UMT5 + SentencePiece vocabulary, video VAE), saved as ComfyUI expects.

Files under a nodegraph home: ``diffusion_models/`` in ComfyUI's layout (original Wan names under
``model.diffusion_model.``) and diffusers' layout, ``text_encoders/umt5-tiny.safetensors`` with the vocabulary in
its ``spiece_model`` tensor (as ComfyUI's UMT5 files), ``vae/wan_2.1_vae.safetensors`` (original layout) and
``vae/wan-vae-diffusers.safetensors``. ``WanPipeline`` over the same modules is the numerical oracle.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, model_folders

WORDS = "a photo of the cat dog red green blue circle square on sky tree walking running video river mountain".split()
TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2)
UMT5 = dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
            use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
           temperal_downsample=[False, True, True])
LAYOUTS = {"comfyui": "wan2.1-tiny-comfyui.safetensors", "diffusers": "wan2.1-tiny-diffusers.safetensors"}
TEXT = "umt5-tiny.safetensors"
VAE_FILES = {"comfyui": "wan_2.1_vae.safetensors", "diffusers": "wan-vae-diffusers.safetensors"}

#: diffusers name fragment → original Wan name fragment, applied in order (inverse of diffusers' converter).
_TO_ORIGINAL = (("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
                ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
                ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
                ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
                ("condition_embedder.time_proj", "time_projection.1"), ("attn1", "self_attn"),
                ("attn2", "cross_attn"), (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."),
                (".to_v.", ".v."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("norm2", "norm_swap"),
                ("norm3", "norm2"), ("norm_swap", "norm3"), ("proj_out", "head.head"))


def to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original (ComfyUI) names for a diffusers Wan transformer state dict."""
    out = {}
    for key, value in state.items():
        new = "head.modulation" if key == "scale_shift_table" else key.replace("scale_shift_table", "modulation")
        for a, b in _TO_ORIGINAL:
            new = new.replace(a, b)
        out[new] = value
    return out


def vae_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original names for a diffusers Wan 2.1 VAE (found by converting candidate names with diffusers' converter)."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    candidates: dict[str, str] = {}
    for key in state:
        for cand in _vae_candidates(key)[1:]:  # [0] is the key itself, which the converter keeps as it is
            got = convert_wan_vae_to_diffusers({cand: None})
            if list(got) == [key]:
                candidates[key] = cand
                break
        else:
            raise AssertionError(f"no original name for {key}")
    return {candidates[k]: v for k, v in state.items()}


def _vae_candidates(key: str) -> list[str]:
    import re

    parts = [key]
    subs = [("mid_block.resnets.0.", "middle.0."), ("mid_block.resnets.1.", "middle.2."),
            ("mid_block.attentions.0.", "middle.1."), ("norm_out.", "head.0."), ("conv_out.", "head.2."),
            ("conv_in.", "conv1."), ("quant_conv.", "conv1."), ("post_conv1.", "conv2."), ("norm1.", "residual.0."),
            ("conv1.", "residual.2."), ("norm2.", "residual.3."), ("conv2.", "residual.6."),
            ("conv_shortcut.", "shortcut."), ("down_blocks.", "downsamples.")]
    for a, b in subs:
        parts = parts + [p.replace(a, b) for p in parts if a in p]
    if key == "post_quant_conv.weight" or key == "post_quant_conv.bias":
        parts.append("conv2." + key.rsplit(".", 1)[1])
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)\.|upsamplers\.0\.)(.*)", key)
    if m:
        block, tail = int(m.group(1)), m.group(4)
        if m.group(3) is not None:
            idx = block * 4 + int(m.group(3))
            for a, b in (("norm1.", "residual.0."), ("conv1.", "residual.2."), ("norm2.", "residual.3."),
                         ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut.")):
                tail = tail.replace(a, b)
            parts.append(f"decoder.upsamples.{idx}.{tail}")
        else:
            parts.append(f"decoder.upsamples.{block * 4 + 3}.{tail}")
    return parts


def spiece_model() -> bytes:
    """A tiny SentencePiece unigram model (pad 0, end 1, unk 2, as UMT5's) trained on WORDS."""
    import sentencepiece as spm

    lines = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=40,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return out.getvalue()


@dataclass
class TinyWan:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    home: Path

    def pipeline(self, shift: float, steps: int) -> Any:
        """WanPipeline over the same modules, its Euler schedule on ComfyUI's "simple" sigmas for ``steps``."""
        import functools

        import numpy as np
        from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps = functools.partial(scheduler.set_timesteps,
                                                    sigmas=np.linspace(1.0, 1.0 / steps, steps))
        return WanPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, transformer=self.transformer,
                           vae=self.vae, scheduler=scheduler)


def build(home: Path) -> TinyWan:
    """Build the tiny Wan and write its files under ``home/models``."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    from nodegraph.diffusion.video_models.wan_text import tokenizer_from

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**TRANSFORMER).eval()
    with torch.no_grad():  # random modulation tables and norms, so a wrong mapping shows
        for name, p in transformer.named_parameters():
            if "scale_shift_table" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") and "norm" in name else 0.0))
    vae = AutoencoderKLWan(**VAE).eval()
    spiece = spiece_model()
    tokenizer = tokenizer_from(spiece, None, "tiny")
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **UMT5)).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    state = cloned_state(transformer)
    save_file(state, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in to_original(state).items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    te = {k: v.contiguous().clone() for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    te["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(te, str(models / "text_encoders" / TEXT))
    vstate = cloned_state(vae)
    save_file(vstate, str(models / "vae" / VAE_FILES["diffusers"]))
    save_file(vae_to_original(vstate), str(models / "vae" / VAE_FILES["comfyui"]))
    return TinyWan(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, home=home)
