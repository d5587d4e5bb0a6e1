"""Diffusers → original (CompVis/LDM) tensor names: the inverse of diffusers' single-file conversion.

Used to write checkpoints in the layout real ``*.safetensors`` files have (tests, exports) and to map LoRA keys
written against LDM module names (kohya SDXL LoRAs: ``lora_unet_input_blocks_4_1_…``) onto diffusers modules.
"""

from __future__ import annotations

from typing import Any, Iterable

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = (("time_embedding.linear_1", "time_embed.0"), ("time_embedding.linear_2", "time_embed.2"),
               ("conv_in", "input_blocks.0.0"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"),
               ("add_embedding.linear_1", "label_emb.0.0"), ("add_embedding.linear_2", "label_emb.0.2"))
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _sub(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    for new, old in table:
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_name_to_ldm(key: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str:
    """The LDM name (without ``model.diffusion_model.``) of a diffusers UNet parameter or module name."""
    per = layers_per_block + 1
    for src, dst in _UNET_FIXED:
        if key == src or key.startswith(src + "."):
            return dst + key[len(src):]
    parts = key.split(".")
    head = parts[0]
    if head == "down_blocks" and len(parts) > 3:
        b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return f"input_blocks.{1 + b * per + j}.0.{_sub(rest, _RESNET)}".rstrip(".")
        if kind == "attentions":
            return f"input_blocks.{1 + b * per + j}.1.{rest}".rstrip(".")
        if kind == "downsamplers":  # downsamplers.0.conv.* → …0.op.*
            return f"input_blocks.{1 + b * per + layers_per_block}.0.op.{'.'.join(parts[5:])}".rstrip(".")
    elif head == "mid_block" and len(parts) > 2:
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_sub(rest, _RESNET)}".rstrip(".")
        return f"middle_block.1.{rest}".rstrip(".")
    elif head == "up_blocks" and len(parts) > 3:
        b, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "resnets":
            return f"output_blocks.{b * per + j}.0.{_sub(rest, _RESNET)}".rstrip(".")
        if kind == "attentions":
            return f"output_blocks.{b * per + j}.1.{rest}".rstrip(".")
        if kind == "upsamplers":  # slot 2 when the block has attentions, else 1
            slot = 2 if b in up_blocks_with_attention else 1
            return f"output_blocks.{b * per + layers_per_block}.{slot}.{'.'.join(parts[4:])}".rstrip(".")
    raise KeyError(f"no LDM name for UNet key {key!r}")


def _up_attention_blocks(keys: Iterable[str]) -> set[int]:
    return {int(k.split(".")[1]) for k in keys if k.startswith("up_blocks.") and ".attentions." in k}


def unet_to_ldm(state: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """Rename a diffusers UNet2DConditionModel state dict to ``model.diffusion_model.*`` LDM keys."""
    with_attn = _up_attention_blocks(state)
    return {UNET_PREFIX + unet_name_to_ldm(k, layers_per_block, with_attn): v for k, v in state.items()}


def unet_module_names(unet: Any) -> dict[str, str]:
    """LDM module name → diffusers module name for every weight-bearing module of a UNet2DConditionModel."""
    names = [n for n, _ in unet.named_parameters() if n.endswith(".weight")]
    with_attn = _up_attention_blocks(names)
    out: dict[str, str] = {}
    for name in names:
        module = name[: -len(".weight")]
        out[unet_name_to_ldm(module, unet.config.layers_per_block, with_attn)] = module
    return out


def vae_name_to_ldm(key: str, num_blocks: int) -> str:
    """The LDM name (without ``first_stage_model.``) of a diffusers AutoencoderKL parameter."""
    parts = key.split(".")
    side = parts[0]
    if side not in ("encoder", "decoder") or len(parts) < 3:
        return key
    if parts[1] in ("down_blocks", "up_blocks"):
        b = int(parts[2]) if side == "encoder" else num_blocks - 1 - int(parts[2])
        word = "down" if side == "encoder" else "up"
        if parts[3] == "resnets":
            rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.{word}.{b}.block.{parts[4]}.{rest}"
        sampler = "downsample" if side == "encoder" else "upsample"
        return f"{side}.{word}.{b}.{sampler}.{'.'.join(parts[5:])}"
    if parts[1] == "mid_block":
        if parts[2] == "resnets":
            rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
        return f"{side}.mid.attn_1.{_sub('.'.join(parts[4:]), _VAE_ATTN)}"
    if parts[1] == "conv_norm_out":
        return f"{side}.norm_out.{parts[2]}"
    return key


def vae_to_ldm(state: dict[str, Any], num_blocks: int, prefix: str = VAE_PREFIX) -> dict[str, Any]:
    """Rename a diffusers AutoencoderKL state dict to LDM keys (mid-block attention as 1×1 convolutions)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = vae_name_to_ldm(key, num_blocks)
        if ".mid.attn_1." in new and getattr(value, "ndim", 0) == 2:
            value = value[:, :, None, None]
        out[prefix + new] = value
    return out


def text_encoder_to_ldm(state: dict[str, Any], prefix: str = CLIP_PREFIX) -> dict[str, Any]:
    """Rename a transformers CLIPTextModel state dict to ``cond_stage_model.transformer.text_model.*`` keys."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in state.items()}


_OPEN_CLIP_LAYER = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                    ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))


def open_clip_to_ldm(state: dict[str, Any], prefix: str = "conditioner.embedders.1.model.") -> dict[str, Any]:
    """Rename a CLIPTextModel(WithProjection) state dict to OpenCLIP's layout (SD2/SDXL: fused q/k/v projections)."""
    import torch

    flat = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, Any] = {}
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    for key, value in flat.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key.startswith("encoder.layers."):
            _, _, n, rest = key.split(".", 3)
            base = f"{prefix}transformer.resblocks.{n}."
            if rest.startswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")):
                if rest.startswith("self_attn.q_proj"):
                    kind = rest.rsplit(".", 1)[1]  # weight | bias
                    parts = [flat[f"encoder.layers.{n}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    out[f"{base}attn.in_proj_{kind}"] = torch.cat(parts, 0)
                continue
            out[base + _sub(rest, _OPEN_CLIP_LAYER)] = value
    return out
