"""Derive diffusers configs for an SD1-layout single file of unusual size from its tensor shapes.

What shapes cannot tell is filled in by SD convention and said in the docstrings: attention heads (8 per block
with convolutional projections, as SD1; width/64 with linear projections, as SD2/SDXL), group-norm groups (32),
text-encoder heads (width/64) and activation (quick_gelu, CLIP ViT-L's), VAE scaling factor (0.18215).
A vocabulary other than CLIP's 49,408 tokens cannot be derived: such files must carry their tokenizer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .detect import CONFIGS_DIR, UNET, UnknownModelError

if TYPE_CHECKING:
    from .detect import Header

CLIP_VOCAB = 49408
TE = "cond_stage_model.transformer.text_model."
VAE = "first_stage_model."


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=2)


def unet_config(h: "Header") -> dict[str, Any]:
    """UNet2DConditionModel config from ``model.diffusion_model.*`` shapes."""
    s = h.shapes
    ch = s[UNET + "input_blocks.0.0.weight"]
    blocks: list[dict[str, Any]] = []  # per down block: channels, resnets, attention depth
    current: dict[str, Any] = {"resnets": 0, "depth": 0, "channels": ch[0]}
    i = 1
    while UNET + f"input_blocks.{i}.0.op.weight" in s or UNET + f"input_blocks.{i}.0.in_layers.2.weight" in s:
        if UNET + f"input_blocks.{i}.0.op.weight" in s:
            blocks.append(current)
            current = {"resnets": 0, "depth": 0, "channels": current["channels"]}
        else:
            current["resnets"] += 1
            current["channels"] = s[UNET + f"input_blocks.{i}.0.in_layers.2.weight"][0]
            depth = h.count(UNET + f"input_blocks.{i}.1.transformer_blocks.{{}}.")
            current["depth"] = max(current["depth"], depth)
        i += 1
    blocks.append(current)
    layers = {b["resnets"] for b in blocks}
    if len(layers) != 1:
        raise UnknownModelError(f"{h.path.name}: UNet blocks have different numbers of layers ({sorted(layers)})")
    k = next((key for key in s if key.startswith(UNET) and key.endswith("attn2.to_k.weight")), None)
    proj = next((key for key in s if key.startswith(UNET) and key.endswith(".proj_in.weight")), None)
    linear = proj is not None and len(s[proj]) == 2
    channels = [b["channels"] for b in blocks]
    config: dict[str, Any] = {
        "_class_name": "UNet2DConditionModel",
        "in_channels": ch[1],
        "out_channels": s[UNET + "out.2.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": layers.pop(),
        "down_block_types": ["CrossAttnDownBlock2D" if b["depth"] else "DownBlock2D" for b in blocks],
        "up_block_types": ["CrossAttnUpBlock2D" if b["depth"] else "UpBlock2D" for b in reversed(blocks)],
        "mid_block_type": ("UNetMidBlock2DCrossAttn" if UNET + "middle_block.1.proj_in.weight" in s
                           else "UNetMidBlock2D"),
        "cross_attention_dim": s[k][1] if k else None,
        "use_linear_projection": linear,
        "attention_head_dim": [max(1, c // 64) for c in channels] if linear else 8,
        "transformer_layers_per_block": [max(1, b["depth"]) for b in blocks],
        "norm_num_groups": 32,
        "sample_size": 64,
    }
    if UNET + "label_emb.0.0.weight" in s:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=s[UNET + "label_emb.0.0.weight"][1])
    return config


def vae_config(h: "Header", prefix: str = VAE) -> dict[str, Any]:
    """AutoencoderKL config from the shapes of ``<prefix>encoder.*``/``decoder.*`` (LDM names)."""
    s = h.shapes
    n = h.count(prefix + "encoder.down.{}.")
    if n == 0 or prefix + "decoder.conv_in.weight" not in s:
        raise UnknownModelError(f"{h.path.name}: no VAE encoder/decoder in LDM naming under {prefix or 'the root'!r}")
    channels = [s[prefix + f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(n)]
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": s[prefix + "encoder.conv_in.weight"][1],
        "out_channels": s[prefix + "decoder.conv_out.weight"][0],
        "block_out_channels": channels,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "layers_per_block": h.count(prefix + "encoder.down.0.block.{}."),
        "latent_channels": s[prefix + "decoder.conv_in.weight"][1],
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def text_encoder_config(h: "Header") -> dict[str, Any]:
    """CLIPTextModel config from ``cond_stage_model.transformer.text_model.*`` shapes."""
    s = h.shapes
    vocab, hidden = s[TE + "embeddings.token_embedding.weight"]
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": s[TE + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": h.count(TE + "encoder.layers.{}."),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": s[TE + "embeddings.position_embedding.weight"][0],
        "hidden_act": "quick_gelu", "projection_dim": hidden,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def derive_files(h: "Header") -> dict[str, str]:
    """All config files for an SD1-layout checkpoint; raises ``UnknownModelError`` naming what is missing."""
    missing = [what for what, key in (("a VAE (first_stage_model.*)", VAE + "encoder.conv_in.weight"),
                                      ("a CLIP text encoder (cond_stage_model.transformer.*)",
                                       TE + "embeddings.token_embedding.weight"))
               if key not in h.shapes]
    if missing:
        raise UnknownModelError(f"{h.path.name} has a Stable Diffusion UNet of unusual size but no "
                                f"{' and no '.join(missing)}; only complete SD1/SD2/SDXL checkpoints load from "
                                "one file — use a diffusers folder for this model")
    text = text_encoder_config(h)
    if text["vocab_size"] != CLIP_VOCAB:
        raise UnknownModelError(f"{h.path.name}: its text encoder has a {text['vocab_size']}-token vocabulary, not "
                                f"CLIP's {CLIP_VOCAB}, and the file carries no tokenizer; use the diffusers folder "
                                "it was exported from")
    sd1 = CONFIGS_DIR / "sd1"
    return {
        "model_index.json": (sd1 / "model_index.json").read_text(encoding="utf-8"),
        "unet/config.json": _dump(unet_config(h)),
        "vae/config.json": _dump(vae_config(h)),
        "text_encoder/config.json": _dump(text),
        "scheduler/scheduler_config.json": (sd1 / "scheduler/scheduler_config.json").read_text(encoding="utf-8"),
        "tokenizer/tokenizer_config.json": (sd1 / "tokenizer/tokenizer_config.json").read_text(encoding="utf-8"),
    }
