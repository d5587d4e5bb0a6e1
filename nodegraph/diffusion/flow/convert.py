"""Flux (and Chroma) transformer weights between the original (Black Forest Labs, also ComfyUI's) and diffusers' names.

Both directions come from one table, so the loader's conversion and the tests' inverse agree. Sizes (inner width,
MLP width) are read from the tensors, so scaled-down models convert too (diffusers' own converter assumes 3072).
Split tensors are views of the originals: converting never holds a second copy of the weights.
"""

from __future__ import annotations

from typing import Any

from .detect import block_count

#: Original name → diffusers name, for tensors that are renamed only ({i}: block index; "*" = weight and bias).
_GLOBAL = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
    # Chroma: its modulations come from one approximator instead of per-block layers
    "distilled_guidance_layer.in_proj": "distilled_guidance_layer.in_proj",
    "distilled_guidance_layer.out_proj": "distilled_guidance_layer.out_proj",
}
_APPROX = "distilled_guidance_layer."
_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2", "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}
_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
        "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_LINEAR1 = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
_ADA_OUT = ("final_layer.adaLN_modulation.1", "norm_out.linear")


def _swap_halves(t: Any) -> Any:
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _pairs(n_double: int, n_single: int, n_approx: int = 0) -> list[tuple[str, str]]:
    """(original, diffusers) names of every renamed tensor (weights and biases)."""
    out = []
    for i in range(n_approx):
        a = f"{_APPROX}layers.{i}."
        for s in ("weight", "bias"):
            out += [(f"{a}in_layer.{s}", f"{a}linear_1.{s}"), (f"{a}out_layer.{s}", f"{a}linear_2.{s}")]
        out.append((f"{_APPROX}norms.{i}.scale", f"{_APPROX}norms.{i}.weight"))
    for old, new in _GLOBAL.items():
        out += [(f"{old}.weight", f"{new}.weight"), (f"{old}.bias", f"{new}.bias")]
    for i in range(n_double):
        for old, new in _DOUBLE.items():
            for s in ("weight", "bias"):
                out.append((f"double_blocks.{i}.{old}.{s}", f"transformer_blocks.{i}.{new}.{s}"))
        out += [(f"double_blocks.{i}.{o}", f"transformer_blocks.{i}.{n}") for o, n in _DOUBLE_NORMS.items()]
    for i in range(n_single):
        for old, new in _SINGLE.items():
            for s in ("weight", "bias"):
                out.append((f"single_blocks.{i}.{old}.{s}", f"single_transformer_blocks.{i}.{new}.{s}"))
        out += [(f"single_blocks.{i}.{o}", f"single_transformer_blocks.{i}.{n}") for o, n in _SINGLE_NORMS.items()]
    return out


def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Diffusers names for an original-layout Flux state dict (keys without a ``model.diffusion_model.`` prefix).

    ``state`` is emptied as it is converted (so its tensors are not held twice); unknown keys raise ValueError.
    """
    n_double, n_single = block_count(state, "double_blocks."), block_count(state, "single_blocks.")
    out: dict[str, Any] = {}
    for old, new in _pairs(n_double, n_single, block_count(state, _APPROX + "layers.")):
        if old in state:
            out[new] = state.pop(old)
    for i in range(n_double):
        for old, news in _QKV.items():
            for s in ("weight", "bias"):
                for new, part in zip(news, state.pop(f"double_blocks.{i}.{old}.{s}").chunk(3, dim=0)):
                    out[f"transformer_blocks.{i}.{new}.{s}"] = part
    for i in range(n_single):
        inner = int(out[f"single_transformer_blocks.{i}.proj_out.weight"].shape[0])
        for s in ("weight", "bias"):
            fused = state.pop(f"single_blocks.{i}.linear1.{s}")
            sizes = (inner, inner, inner, int(fused.shape[0]) - 3 * inner)
            for new, part in zip(_LINEAR1, fused.split(sizes, dim=0)):
                out[f"single_transformer_blocks.{i}.{new}.{s}"] = part
    for s in ("weight", "bias"):
        if f"{_ADA_OUT[0]}.{s}" in state:  # Chroma has none
            out[f"{_ADA_OUT[1]}.{s}"] = _swap_halves(state.pop(f"{_ADA_OUT[0]}.{s}"))
    if state:
        raise ValueError(f"{len(state)} tensors of the file are not part of a Flux transformer "
                         f"(e.g. {next(iter(state))})")
    return out


def to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original (BFL/ComfyUI) names for a diffusers Flux transformer state dict (the inverse of ``to_diffusers``)."""
    import torch

    state = dict(state)
    n_double = block_count(state, "transformer_blocks.")
    n_single = block_count(state, "single_transformer_blocks.")
    out: dict[str, Any] = {}
    for old, new in _pairs(n_double, n_single, block_count(state, _APPROX + "layers.")):
        if new in state:
            out[old] = state.pop(new)
    for i in range(n_double):
        for old, news in _QKV.items():
            for s in ("weight", "bias"):
                out[f"double_blocks.{i}.{old}.{s}"] = torch.cat(
                    [state.pop(f"transformer_blocks.{i}.{n}.{s}") for n in news])
    for i in range(n_single):
        for s in ("weight", "bias"):
            out[f"single_blocks.{i}.linear1.{s}"] = torch.cat(
                [state.pop(f"single_transformer_blocks.{i}.{n}.{s}") for n in _LINEAR1])
    for s in ("weight", "bias"):
        if f"{_ADA_OUT[1]}.{s}" in state:
            out[f"{_ADA_OUT[0]}.{s}"] = _swap_halves(state.pop(f"{_ADA_OUT[1]}.{s}"))
    if state:
        raise ValueError(f"{len(state)} tensors are not part of a diffusers Flux transformer "
                         f"(e.g. {next(iter(state))})")
    return out
