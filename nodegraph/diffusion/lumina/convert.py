"""ComfyUI's/original NextDiT tensor names -> diffusers' (``comfy/ldm/lumina/model.py`` -> diffusers' classes).

Z-Image goes through diffusers' own single-file converter (``convert_z_image_transformer_checkpoint_to_diffusers``)
after the fused ``qkv`` is split here by the detected head counts (the converter splits in thirds, which holds only
when the kv heads equal the heads). Lumina 2's converter in diffusers hard-codes the 2B model's widths, so its
renaming is done here, for any width: ``attention`` -> ``attn`` (``qkv`` -> ``to_q``/``to_k``/``to_v``, ``out`` ->
``to_out.0``, ``q_norm``/``k_norm`` -> ``norm_q``/``norm_k``), ``feed_forward.wN`` -> ``linear_N``,
``attention_norm1`` -> ``norm1.norm`` (``norm1`` in the unmodulated context refiner), ``attention_norm2`` ->
``norm2``, ``adaLN_modulation.1`` -> ``norm1.linear``, ``cap_embedder``/``t_embedder`` -> ``time_caption_embed``,
``final_layer`` -> ``norm_out``; the unused ``norm_final`` is dropped.
"""

from __future__ import annotations

import re
from typing import Any

_LUMINA_TOP = (("cap_embedder.", "time_caption_embed.caption_embedder."),
               ("t_embedder.mlp.0.", "time_caption_embed.timestep_embedder.linear_1."),
               ("t_embedder.mlp.2.", "time_caption_embed.timestep_embedder.linear_2."),
               ("final_layer.adaLN_modulation.1.", "norm_out.linear_1."),
               ("final_layer.linear.", "norm_out.linear_2."))
_LUMINA_BLOCK = {"attention.out": "attn.to_out.0", "attention.q_norm": "attn.norm_q",
                 "attention.k_norm": "attn.norm_k", "feed_forward.w1": "feed_forward.linear_1",
                 "feed_forward.w2": "feed_forward.linear_2", "feed_forward.w3": "feed_forward.linear_3",
                 "attention_norm2": "norm2", "adaLN_modulation.1": "norm1.linear"}
_BLOCK = re.compile(r"^(layers|noise_refiner|context_refiner)\.(\d+)\.(.+)\.(weight|bias)$")


def split_qkv(state: dict[str, Any], heads: int, kv_heads: int, prefix: str) -> dict[str, Any]:
    """Each fused ``….attention.qkv.weight`` split into ``….<prefix>to_q/to_k/to_v.weight`` by head counts."""
    for key in [k for k in state if k.endswith(".attention.qkv.weight")]:
        qkv = state.pop(key)
        head_dim = qkv.shape[0] // (heads + 2 * kv_heads)
        q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=0)
        base = key[: -len("attention.qkv.weight")] + prefix
        state.update({base + "to_q.weight": q, base + "to_k.weight": k, base + "to_v.weight": v})
    return state


def z_image_to_diffusers(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """diffusers' ``ZImageTransformer2DModel`` names for a ComfyUI-layout Z-Image state (emptying ``state``)."""
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    state = split_qkv(state, int(config["n_heads"]), int(config["n_kv_heads"]), "attention.")
    return convert_z_image_transformer_checkpoint_to_diffusers(state)


def lumina2_to_diffusers(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """diffusers' ``Lumina2Transformer2DModel`` names for a ComfyUI/original Lumina 2 state (emptying ``state``)."""
    state = split_qkv(state, int(config["num_attention_heads"]), int(config["num_kv_heads"]), "attn.")
    state.pop("norm_final.weight", None)
    out: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        new = key
        for old, repl in _LUMINA_TOP:
            if key.startswith(old):
                new = repl + key[len(old):]
        m = _BLOCK.match(key)
        if m:
            group, index, inner, kind = m.groups()
            if inner == "attention_norm1":
                inner = "norm1" if group == "context_refiner" else "norm1.norm"
            inner = _LUMINA_BLOCK.get(inner, inner)
            new = f"{group}.{index}.{inner}.{kind}"
        out[new] = tensor
    return out


__all__ = ["lumina2_to_diffusers", "split_qkv", "z_image_to_diffusers"]
