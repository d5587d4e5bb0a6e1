"""A tiny random-weight Genmo Mochi 1 preview (transformer, T5 + tokenizer, video VAE), saved as ComfyUI expects.

Files under a nodegraph home: ``diffusion_models/`` in ComfyUI's (Genmo's) layout and diffusers'; ``vae/`` as
ComfyUI's ``mochi_vae`` (``encoder.layers.*``, ``decoder.blocks.*``) and diffusers';
``text_encoders/t5xxl_fp16.safetensors`` with a tiny ``t5_tokenizer/`` beside it;
``checkpoints/mochi_preview_fp8_scaled.safetensors`` (all-in-one, the transformer's block weights as ComfyUI's
fp8_scaled). ``MochiPipeline`` over the same modules is the numerical oracle.
The inverse name mappings here are written independently of the loaders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, model_folders
from flux_tiny import T5, t5_tokenizer_files

TRANSFORMER = {"patch_size": 2, "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2,
               "pooled_projection_dim": 16, "in_channels": 12, "text_embed_dim": T5["d_model"], "time_embed_dim": 32,
               "max_sequence_length": 256}
VAE = {"encoder_block_out_channels": (32, 32, 32, 32), "decoder_block_out_channels": (32, 32, 32, 32),
       "layers_per_block": (1, 1, 1, 1, 1)}
LAYOUTS = {"comfyui": "mochi-tiny-comfyui.safetensors", "diffusers": "mochi-tiny-diffusers.safetensors"}
VAE_FILES = {"comfyui": "mochi_vae_tiny.safetensors", "diffusers": "mochi-vae-diffusers.safetensors"}
TEXT = "t5xxl_fp16.safetensors"
CHECKPOINT = "mochi_preview_fp8_scaled.safetensors"

_T = r"transformer_blocks\.(\d+)\."
#: diffusers → ComfyUI (Genmo) names, one tensor each
_RENAME = ((r"patch_embed\.proj\.", "x_embedder.proj."),
           (r"time_embed\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
           (r"time_embed\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
           (r"time_embed\.pooler\.", "t5_y_embedder."), (r"time_embed\.caption_proj\.", "t5_yproj."),
           (_T + r"norm1\.linear\.", "blocks.{0}.mod_x."),
           (_T + r"norm1_context\.linear(?:_1)?\.", "blocks.{0}.mod_y."),
           (_T + r"attn1\.norm_q\.", "blocks.{0}.attn.q_norm_x."),
           (_T + r"attn1\.norm_k\.", "blocks.{0}.attn.k_norm_x."),
           (_T + r"attn1\.norm_added_q\.", "blocks.{0}.attn.q_norm_y."),
           (_T + r"attn1\.norm_added_k\.", "blocks.{0}.attn.k_norm_y."),
           (_T + r"attn1\.to_out\.0\.", "blocks.{0}.attn.proj_x."),
           (_T + r"attn1\.to_add_out\.", "blocks.{0}.attn.proj_y."),
           (_T + r"ff\.net\.2\.", "blocks.{0}.mlp_x.w2."), (_T + r"ff_context\.net\.2\.", "blocks.{0}.mlp_y.w2."),
           (r"proj_out\.", "final_layer.linear."), (r"pos_frequencies", "pos_frequencies"))


def _halves_swapped(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_comfyui(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's (Genmo's) names for a diffusers Mochi transformer state dict."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if m := re.match(_T + r"attn1\.(to_|add_)([qkv])(?:_proj)?\.weight$", key):
            if m.group(3) == "q":
                side = "x" if m.group(2) == "to_" else "y"
                parts = [state[key.replace(f".{m.group(2)}q", f".{m.group(2)}{p}")] for p in "qkv"]
                out[f"blocks.{m.group(1)}.attn.qkv_{side}.weight"] = torch.cat(parts, dim=0)
            continue
        if m := re.match(_T + r"(ff|ff_context)\.net\.0\.proj\.(weight|bias)$", key):
            side = "x" if m.group(2) == "ff" else "y"
            out[f"blocks.{m.group(1)}.mlp_{side}.w1.{m.group(3)}"] = _halves_swapped(value)
            continue
        if key.startswith("norm_out.linear."):
            out["final_layer.mod." + key.rsplit(".", 1)[1]] = _halves_swapped(value)
            continue
        for pattern, target in _RENAME:
            if m := re.match(pattern, key):
                out[target.format(*m.groups()) + key[m.end():]] = value
                break
        else:
            raise AssertionError(f"no ComfyUI name for {key}")
    return out


_STACK = {"norm1.norm_layer": "0", "conv1.conv": "2", "norm2.norm_layer": "3", "conv2.conv": "5"}


def vae_to_genmo(state: dict[str, Any], n_in: int = 1, n_down: int = 3) -> dict[str, Any]:
    """Genmo's (ComfyUI's mochi_vae) names for a diffusers Mochi VAE with ``n_in`` encoder input resnets and
    ``n_down`` down/up blocks."""
    out: dict[str, Any] = {}

    def resnet(rest: str) -> str:
        m = re.match(r"resnets\.(\d+)\.(norm1\.norm_layer|conv1\.conv|norm2\.norm_layer|conv2\.conv)\.(.*)$", rest)
        return f"{m.group(1)}", f"stack.{_STACK[m.group(2)]}.{m.group(3)}"

    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part == "decoder":
            if rest.startswith("conv_in."):
                name = "blocks.0.0." + rest[len("conv_in."):]
            elif rest.startswith("proj_out."):
                name = "output_proj." + rest[len("proj_out."):]
            elif m := re.match(r"up_blocks\.(\d+)\.proj\.(.*)$", rest):
                name = f"blocks.{int(m.group(1)) + 1}.proj.{m.group(2)}"
            elif m := re.match(r"up_blocks\.(\d+)\.(.*)$", rest):
                i, tail = resnet(m.group(2))
                name = f"blocks.{int(m.group(1)) + 1}.blocks.{i}.{tail}"
            elif rest.startswith("block_in."):
                i, tail = resnet(rest[len("block_in."):])
                name = f"blocks.0.{int(i) + 1}.{tail}"
            else:
                i, tail = resnet(rest[len("block_out."):])
                name = f"blocks.{n_down + 1}.{i}.{tail}"
            out["decoder." + name] = value
            continue
        if rest.startswith("proj_in."):
            out["encoder.layers.0." + rest[len("proj_in."):]] = value
            continue
        if rest.startswith("norm_out.norm_layer."):
            out["encoder.output_norm." + rest.rsplit(".", 1)[1]] = value
            continue
        if rest.startswith("proj_out."):
            out["encoder.output_proj." + rest.rsplit(".", 1)[1]] = value
            continue
        if m := re.match(r"down_blocks\.(\d+)\.(.*)$", rest):
            base, inner, offset = f"layers.{n_in + 1 + int(m.group(1))}.layers.", m.group(2), 1
            if inner.startswith("conv_in.conv."):
                out[f"encoder.{base}0.{inner[len('conv_in.conv.'):]}"] = value
                continue
        elif rest.startswith("block_in."):
            base, inner, offset = "layers.", rest[len("block_in."):], 1
        else:
            base, inner, offset = "layers.", rest[len("block_out."):], n_in + n_down + 1
        if m := re.match(r"attentions\.(\d+)\.to_([qkv])\.weight$", inner):
            if m.group(2) == "q":
                parts = [state[key.replace(".to_q.", f".to_{p}.")] for p in "qkv"]
                out[f"encoder.{base}{int(m.group(1)) + offset}.attn_block.attn.qkv.weight"] = torch.cat(parts)
            continue
        if m := re.match(r"attentions\.(\d+)\.to_out\.0\.(.*)$", inner):
            out[f"encoder.{base}{int(m.group(1)) + offset}.attn_block.attn.out.{m.group(2)}"] = value
            continue
        if m := re.match(r"norms\.(\d+)\.norm_layer\.(.*)$", inner):
            out[f"encoder.{base}{int(m.group(1)) + offset}.attn_block.norm.{m.group(2)}"] = value
            continue
        i, tail = resnet(inner)
        out[f"encoder.{base}{int(i) + offset}.{tail}"] = value
    return out


def scaled_fp8(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's fp8_scaled form of ``state``: 2-D block weights in float8 with a ``scale_weight``, and the marker."""
    out = dict(state)
    for key in [k for k in state if k.startswith("blocks.") and k.endswith(".weight") and state[k].dim() == 2]:
        scale = state[key].abs().max().clamp(min=1e-8) / 448.0
        out[key] = (state[key] / scale).to(torch.float8_e4m3fn)
        out[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


@dataclass
class TinyMochi:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    t5: Any
    home: Path

    @property
    def tokenizer(self) -> Any:
        """The tiny T5 tokenizer written beside the T5 file."""
        from transformers import T5TokenizerFast

        return T5TokenizerFast.from_pretrained(str(self.home / "models" / "text_encoders" / "t5_tokenizer"))

    def pipeline(self) -> Any:
        """MochiPipeline over the same modules, with Mochi's scheduler (inverted sigmas, no shift)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, MochiPipeline

        return MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True), vae=self.vae,
                             text_encoder=self.t5, tokenizer=self.tokenizer, transformer=self.transformer)


def build(home: Path) -> TinyMochi:
    """Build the tiny Mochi and write its files under ``home/models``."""
    from diffusers import AutoencoderKLMochi, MochiTransformer3DModel
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = MochiTransformer3DModel(**TRANSFORMER).eval()
    with torch.no_grad():  # random rotary frequencies and norm scales, so a wrong mapping shows
        transformer.pos_frequencies.copy_(torch.randn_like(transformer.pos_frequencies))
        for name, p in transformer.named_parameters():
            if "norm_" in name and p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    vae = AutoencoderKLMochi(**VAE).eval()
    t5 = T5EncoderModel(T5Config(**dict(T5, relative_attention_max_distance=128))).eval()
    models = model_folders(home, "checkpoints", "diffusion_models", "text_encoders", "vae")
    state = cloned_state(transformer)
    vstate = cloned_state(vae)
    comfy = to_comfyui(state)
    save_file(state, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(comfy, str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file(vstate, str(models / "vae" / VAE_FILES["diffusers"]))
    genmo = vae_to_genmo(vstate)
    save_file(genmo, str(models / "vae" / VAE_FILES["comfyui"]))
    t5_state = {k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(t5_state, str(models / "text_encoders" / TEXT))
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    allin = {"model.diffusion_model." + k: v for k, v in scaled_fp8(comfy).items()}
    allin.update({"vae." + k: v for k, v in genmo.items()})
    allin.update({"text_encoders.t5xxl.transformer." + k: v for k, v in t5_state.items()})
    save_file(allin, str(models / "checkpoints" / CHECKPOINT))
    t5_tokenizer_files(models / "checkpoints" / "t5_tokenizer")
    return TinyMochi(transformer, vae, t5, home)
