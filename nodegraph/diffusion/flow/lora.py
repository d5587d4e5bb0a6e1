"""Flux.1/Chroma and SD3/SD3.5 LoRA names in diffusers' PEFT names (``transformer_lora.LORA_FORMATS`` names these).

Flux/Chroma (``flux_to_diffusers``): diffusers' own converter (``FluxLoraLoaderMixin.lora_state_dict``: kohya,
ComfyUI ``diffusion_model.*``, xlabs, …) after two fixes it lacks: a single block's fused ``linear1`` is split by
the model's own widths (diffusers assumes Flux.1's 3072/12288), and ComfyUI-named ``lora_A``/``lora_B`` files are
read like its ``lora_down``/``lora_up`` ones.

SD3 (``sd3_to_diffusers``): ComfyUI's ``diffusion_model.joint_blocks.*`` and kohya's ``lora_unet_joint_blocks_*``,
which diffusers has no converter for.

A fused ``attn.qkv`` update (one down, up of 3·width rows) becomes three updates on ``to_q/to_k/to_v`` (or the
context stream's ``add_q/k/v_proj``) sharing the down; adaLN updates whose (shift, scale) halves diffusers stores
swapped (the last block's context stream, ``final_layer``) get their up rows swapped, as diffusers' checkpoint
converter does for the weights. Keys already in diffusers' names pass unchanged.
"""

from __future__ import annotations

import re
from typing import Any

#: original module (after the block index) -> diffusers module(s); several = the rows split evenly between them
_BLOCK = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block.attn.proj": ("attn.to_out.0",),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
    "x_block.attn2.proj": ("attn2.to_out.0",),
    "x_block.mlp.fc1": ("ff.net.0.proj",),
    "x_block.mlp.fc2": ("ff.net.2",),
    "x_block.adaLN_modulation.1": ("norm1.linear",),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "context_block.attn.proj": ("attn.to_add_out",),
    "context_block.mlp.fc1": ("ff_context.net.0.proj",),
    "context_block.mlp.fc2": ("ff_context.net.2",),
    "context_block.adaLN_modulation.1": ("norm1_context.linear",),
}
_TOP = {
    "x_embedder.proj": "pos_embed.proj", "context_embedder": "context_embedder",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out", "final_layer.adaLN_modulation.1": "norm_out.linear",
}
_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".lora_A.weight", ".lora_B.weight", ".alpha")
_DOWN, _UP = (".lora_down.weight", ".lora_A.weight"), (".lora_up.weight", ".lora_B.weight")


def _original_names(layers: int) -> dict[str, str]:
    """kohya's flattened spelling of each original module name -> the dotted one."""
    names = list(_TOP) + [f"joint_blocks.{i}.{inner}" for i in range(layers) for inner in _BLOCK]
    return {n.replace(".", "_"): n for n in names}


def _swap(up: Any) -> Any:
    shift, scale = up.chunk(2, dim=0)
    return __import__("torch").cat([scale, shift], dim=0)


def sd3_to_diffusers(state: dict[str, Any], transformer: Any) -> dict[str, Any]:
    """A LoRA state dict in diffusers' PEFT names (``transformer.<module>.lora_A/lora_B.weight``, ``.alpha``)."""
    layers = int(transformer.config.num_layers)
    flat = _original_names(layers)
    out: dict[str, Any] = {}
    for key, value in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            out[key] = value
            continue
        module = key[: -len(suffix)]
        for prefix in ("model.diffusion_model.", "diffusion_model.", "transformer."):
            if module.startswith(prefix):
                module = module[len(prefix):]
                break
        if module.startswith("lora_unet_"):
            module = flat.get(module[len("lora_unet_"):], module)
        m = re.fullmatch(r"joint_blocks\.(\d+)\.(.+)", module)
        if m and m.group(2) in _BLOCK:
            i, inner = int(m.group(1)), m.group(2)
            targets = [f"transformer_blocks.{i}.{t}" for t in _BLOCK[inner]]
            swap = inner == "context_block.adaLN_modulation.1" and i == layers - 1
        elif module in _TOP:
            targets, swap = [_TOP[module]], module == "final_layer.adaLN_modulation.1"
        else:
            out[key if key.startswith("transformer.") else "transformer." + module + suffix] = value
            continue
        kind = "down" if suffix in _DOWN else "up" if suffix in _UP else "alpha"
        if kind == "up" and swap:
            value = _swap(value)
        parts = value.chunk(len(targets), dim=0) if kind == "up" else [value] * len(targets)
        for target, part in zip(targets, parts):
            name = {"down": ".lora_A.weight", "up": ".lora_B.weight", "alpha": ".alpha"}[kind]
            out[f"transformer.{target}{name}"] = part.contiguous() if kind != "alpha" else part
    return out


def _split(state: dict[str, Any], module: str, targets: list[str], dims: list[int], out: dict[str, Any]) -> bool:
    """Move the update of fused ``module`` (any suffix style) into ``out`` as PEFT updates on ``targets`` whose
    rows are ``dims``; False when the state has no such update."""
    for down_sfx, up_sfx in zip(_DOWN, _UP):
        if module + down_sfx in state and module + up_sfx in state:
            down, up = state.pop(module + down_sfx), state.pop(module + up_sfx)
            alpha = state.pop(module + ".alpha", None)
            if up.shape[0] != sum(dims):
                raise ValueError(f"{module} updates {up.shape[0]} rows but the model's layer has {sum(dims)}")
            for target, part in zip(targets, up.split(dims, dim=0)):
                out[f"transformer.{target}.lora_A.weight"] = down
                out[f"transformer.{target}.lora_B.weight"] = part.contiguous()
                if alpha is not None:
                    out[f"transformer.{target}.alpha"] = alpha
            return True
    return False


def flux_to_diffusers(state: dict[str, Any], transformer: Any) -> dict[str, Any]:
    """A Flux.1/Chroma LoRA state dict in diffusers' PEFT names (diffusers' converter plus the fixes above)."""
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin

    state = dict(state)
    for key in list(state):  # ComfyUI-named lora_A/lora_B: as diffusers reads ComfyUI's lora_down/lora_up
        if key.startswith(("diffusion_model.", "lora_unet_")) and key.endswith((".lora_A.weight", ".lora_B.weight")):
            new = key[: -len(".lora_A.weight")] + (".lora_down.weight" if key.endswith("A.weight") else
                                                   ".lora_up.weight")
            state[new] = state.pop(key)
    inner = int(transformer.config.num_attention_heads) * int(transformer.config.attention_head_dim)
    out: dict[str, Any] = {}
    for i, block in enumerate(getattr(transformer, "single_transformer_blocks", ())):
        dims = [inner] * 3 + [int(block.proj_mlp.out_features)]
        names = [f"single_transformer_blocks.{i}.attn.to_{c}" for c in "qkv"]
        names.append(f"single_transformer_blocks.{i}.proj_mlp")
        for module in (f"lora_unet_single_blocks_{i}_linear1", f"diffusion_model.single_blocks.{i}.linear1"):
            _split(state, module, names, dims, out)
    if state:
        converted, alphas = FluxLoraLoaderMixin.lora_state_dict(state, return_alphas=True)
        out.update(converted)
        out.update({k if k.endswith(".alpha") else k + ".alpha": v for k, v in (alphas or {}).items()})
    return out


__all__ = ["flux_to_diffusers", "sd3_to_diffusers"]
