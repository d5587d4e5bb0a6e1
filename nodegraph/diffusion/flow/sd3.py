"""Stable Diffusion 3 / 3.5 (MMDiT, MMDiT-X) transformers: detection, config from shapes, loading, the model call.

Layouts read: ComfyUI's and Stability's (``joint_blocks.*`` under ``model.diffusion_model.`` or at the root) —
converted with diffusers' own SD3 converter — and diffusers' (``transformer_blocks.*`` with ``pos_embed.proj``).
The config follows from the shapes (width, depth, head width from the q/k norms, dual-attention layers of 3.5
medium, position-embedding size, caption width), on top of the shipped 3.5 large config
(``configs/sd3/transformer_large.json``; medium in ``transformer_medium.json``).

The model sees the latent [B, 16, h, w] scaled as SD3's VAE states (1.5305, shift 0.0609), the timestep
sigma × 1000 (ComfyUI's ModelSamplingDiscreteFlow, shift 3.0 unless ModelSamplingSD3 says otherwise), the
CLIP-L/CLIP-G/T5 token states [B, T, 4096] and the pooled CLIP-L + CLIP-G output [B, 2048].
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..types import LatentFormat
from .schedule import FlowSettings

SD3_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sd3"
#: SD3's latent space (its 16-channel VAE): scale and shift as the VAE config states them.
SD3_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=1.5305, shift_factor=0.0609)
#: ComfyUI's default sampling for SD3 and SD3.5 (ModelSamplingDiscreteFlow, shift 3).
SD3_FLOW = FlowSettings("discrete", 3.0, 1000.0)
ORIGINAL_MARKER = "joint_blocks.0.x_block.attn.qkv.weight"
DIFFUSERS_MARKER = "pos_embed.proj.weight"


def sd3_config(name: str = "transformer_large") -> dict[str, Any]:
    """A shipped SD3 config (``transformer_large``, ``transformer_medium``, ``vae``, ``clip_g``) as a dict."""
    return json.loads((SD3_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def _indices(shapes: dict[str, Any], prefix: str, inner: str = "") -> list[int]:
    found = set()
    for k in shapes:
        if k.startswith(prefix):
            index, _, rest = k[len(prefix):].partition(".")
            if index.isdigit() and rest.startswith(inner):
                found.add(int(index))
    return sorted(found)


def config_from_shapes(s: dict[str, Any], p: str, original: bool) -> tuple[dict[str, Any], list[str]]:
    """(SD3Transformer2DModel config, reasons) from the tensor shapes of a transformer under prefix ``p``."""
    if original:
        proj, pos, ctx = s[p + "x_embedder.proj.weight"], s.get(p + "pos_embed"), s[p + "context_embedder.weight"]
        pooled, out = s[p + "y_embedder.mlp.0.weight"][1], s[p + "final_layer.linear.weight"][0]
        blocks, norm = _indices(s, p + "joint_blocks."), s.get(p + "joint_blocks.0.x_block.attn.ln_q.weight")
        dual = _indices(s, p + "joint_blocks.", "x_block.attn2.")
    else:
        proj, pos = s[p + "pos_embed.proj.weight"], s.get(p + "pos_embed.pos_embed")
        ctx = s[p + "context_embedder.weight"]
        pooled, out = s[p + "time_text_embed.text_embedder.linear_1.weight"][1], s[p + "proj_out.weight"][0]
        blocks, norm = _indices(s, p + "transformer_blocks."), s.get(p + "transformer_blocks.0.attn.norm_q.weight")
        dual = _indices(s, p + "transformer_blocks.", "attn2.")
    hidden, in_ch, patch = int(proj[0]), int(proj[1]), int(proj[2])
    head_dim = int(norm[0]) if norm is not None else 64
    config = sd3_config("transformer_large")
    config.update(patch_size=patch, in_channels=in_ch, num_layers=len(blocks), attention_head_dim=head_dim,
                  num_attention_heads=hidden // head_dim, joint_attention_dim=int(ctx[1]),
                  caption_projection_dim=int(ctx[0]), pooled_projection_dim=int(pooled),
                  out_channels=int(out) // (patch * patch), dual_attention_layers=dual,
                  qk_norm="rms_norm" if norm is not None else None)
    if pos is not None:
        config["pos_embed_max_size"] = math.isqrt(int(pos[-2]))
    size = "3.5 medium (MMDiT-X)" if dual else ("3.5 large" if norm is not None else "3 medium")
    reasons = [f"{'original' if original else 'diffusers'} SD3 tensor names under {p or 'the root'!r}",
               f"{len(blocks)} joint blocks, {hidden // head_dim}×{head_dim} wide"
               + (f", dual attention in blocks {dual[0]}–{dual[-1]}" if dual else ""),
               "q/k RMS norms (3.5)" if norm is not None else "no q/k norms (SD3)", f"looks like SD{size}"]
    return config, reasons


def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """Diffusers names for an original/ComfyUI-layout SD3 state dict (no prefix), by diffusers' converter.

    ``state`` is emptied as it is converted; keys the converter leaves raise ValueError.
    """
    from diffusers.loaders.single_file_utils import (
        convert_sd3_transformer_checkpoint_to_diffusers,
    )

    out = convert_sd3_transformer_checkpoint_to_diffusers(state)
    if state:
        raise ValueError(f"{len(state)} tensors of the file are not part of an SD3 transformer "
                         f"(e.g. {next(iter(state))})")
    return out


def build_transformer(config: dict[str, Any]) -> Any:
    """An SD3Transformer2DModel on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import SD3Transformer2DModel

    from ..loading import quiet_libraries

    with quiet_libraries(), init_empty_weights():
        return SD3Transformer2DModel.from_config(config)


def velocity(transformer: Any, x: Any, sigma: float, multiplier: float, emb: Any, pooled: Any,
             dtype: Any, skip_layers: tuple[int, ...] = (), controls: tuple = ()) -> Any:
    """The transformer's velocity for latent ``x`` [B, 16, h, w] (scaled) at noise level ``sigma`` (float32);
    ``controls``: the entry's SD3 ControlNets (``sd3_controlnet.Control``), their block outputs added."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    patch = int(transformer.config.patch_size)
    ph, pw = (-h) % patch, (-w) % patch
    inp = F.pad(x, (0, pw, 0, ph), mode="circular") if ph or pw else x
    t = torch.full((b,), float(sigma) * multiplier, device=x.device, dtype=dtype)
    kwargs: dict[str, Any] = {"skip_layers": list(skip_layers)} if skip_layers else {}
    if controls:
        from .sd3_controlnet import block_states

        states = block_states(controls, inp.to(dtype), float(sigma), t, emb, pooled, dtype)
        if states is not None:
            kwargs["block_controlnet_hidden_states"] = states
    out = transformer(hidden_states=inp.to(dtype), timestep=t, encoder_hidden_states=emb, pooled_projections=pooled,
                      return_dict=False, **kwargs)[0]
    return out[:, :, :h, :w].float()


__all__ = ["DIFFUSERS_MARKER", "ORIGINAL_MARKER", "SD3_CONFIGS", "SD3_FLOW", "SD3_LATENT", "build_transformer",
           "config_from_shapes", "sd3_config", "to_diffusers", "velocity"]
