"""Which diffusion transformer a split file holds, from its tensor names and shapes (header only), and its config.

Layouts read for Flux.1: ComfyUI's (original names under ``model.diffusion_model.``), the original Black Forest Labs
release (``double_blocks.*`` at the root) and diffusers' (``transformer_blocks.*``, ``x_embedder``). The config
follows from the shapes (widths, depths, guidance embedder, input channels), on top of the shipped Flux.1 config, so
dev, schnell, Fill (384 input channels), Canny/Depth (128) and scaled-down test models all load. Families that are
recognised but not loaded yet (SD3, Chroma, Flux.2, Qwen-Image, …) are named in the refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..detect import Header, UnknownModelError

FLUX_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "flux"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "")
#: (marker tensor name without prefix, family name shown to the user) for families recognised but not loaded yet.
_LATER = (("double_stream_modulation_img.lin.weight", "Flux.2"),
          ("transformer_blocks.0.img_mod.1.weight", "Qwen-Image"))


@dataclass
class FlowDetected:
    """A detected diffusion transformer: family, variant, key layout and prefix, diffusers config, and why."""

    family: str  # "flux" | "sd3" | "chroma"
    variant: str  # "dev" | "schnell" | "fill" | "control" (Flux) | "3.5" | "3" (SD3)
    layout: str  # "comfyui" | "original" | "diffusers"
    prefix: str
    config: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        """The MODEL's ``arch`` (e.g. "flux-dev")."""
        return f"{self.family}-{self.variant}"


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped Flux config (``transformer``, ``vae``, ``clip_l``, ``t5xxl``) as a dict."""
    return json.loads((FLUX_CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def _prefix(shapes: dict[str, Any], marker: str) -> str | None:
    return next((p for p in _PREFIXES if p + marker in shapes), None)


def block_count(shapes: Any, prefix: str) -> int:
    """Blocks numbered under ``prefix`` in the tensor names (highest index + 1; 0 when there are none)."""
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def read_config(folder: Path, name: str) -> dict[str, Any]:
    """A shipped diffusers config (``folder/<name>.json``) as a dict, without its ``_class_name``."""
    config = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    config.pop("_class_name", None)
    return config


def find_layout(shapes: Any, prefixes: tuple[str, ...], markers: tuple[tuple[str, str], ...],
                needs: Callable[[str], bool] | None = None) -> tuple[str, str] | None:
    """(prefix, layout) of the first ``(marker, layout)`` found under one of ``prefixes`` (in order) where
    ``needs(prefix)`` holds too; None when the tensor names have none."""
    for prefix in prefixes:
        for marker, layout in markers:
            if prefix + marker in shapes and (needs is None or needs(prefix)):
                return prefix, layout
    return None


def _rope_axes(head_dim: int) -> list[int]:
    """Flux's rotary axes for a head width: (16, 56, 56) at 128; the same proportions (even sizes) otherwise."""
    first = max(2, (head_dim // 8) // 2 * 2)
    rest = (head_dim - first) // 2 // 2 * 2
    return [head_dim - 2 * rest, rest, rest]


def _flux_config(s: dict[str, Any], p: str, original: bool) -> dict[str, Any]:
    if original:
        hidden, in_ch = s[p + "img_in.weight"]
        head_dim = s[p + "double_blocks.0.img_attn.norm.query_norm.scale"][0]
        joint, pooled = s[p + "txt_in.weight"][1], s[p + "vector_in.in_layer.weight"][1]
        layers, singles = block_count(s, p + "double_blocks."), block_count(s, p + "single_blocks.")
        guidance, out_ch = p + "guidance_in.in_layer.weight" in s, s[p + "final_layer.linear.weight"][0]
    else:
        hidden, in_ch = s[p + "x_embedder.weight"]
        head_dim = s[p + "transformer_blocks.0.attn.norm_q.weight"][0]
        joint, pooled = s[p + "context_embedder.weight"][1], s[p + "time_text_embed.text_embedder.linear_1.weight"][1]
        layers = block_count(s, p + "transformer_blocks.")
        singles = block_count(s, p + "single_transformer_blocks.")
        guidance = p + "time_text_embed.guidance_embedder.linear_1.weight" in s
        out_ch = s[p + "proj_out.weight"][0]
    config = shipped_config("transformer")
    config.update(in_channels=int(in_ch), out_channels=int(out_ch), attention_head_dim=int(head_dim),
                  num_attention_heads=int(hidden) // int(head_dim), joint_attention_dim=int(joint),
                  pooled_projection_dim=int(pooled), num_layers=layers, num_single_layers=singles,
                  guidance_embeds=bool(guidance))
    if int(head_dim) != 128:
        config["axes_dims_rope"] = _rope_axes(int(head_dim))
    return config


def detect_transformer(header: Header) -> FlowDetected:
    """The diffusion transformer in ``header``'s file; ``UnknownModelError`` naming what was found otherwise."""
    s = header.shapes
    name = header.path.name
    for original, marker in ((True, "double_blocks.0.img_attn.qkv.weight"),
                             (False, "transformer_blocks.0.attn.add_q_proj.weight")):
        p = _prefix(s, marker)
        if p is None or (not original and _prefix(s, "x_embedder.weight") is None):
            continue
        if p + "distilled_guidance_layer.in_proj.weight" in s:  # Chroma: Flux blocks, one modulation approximator
            from .chroma import config_from_shapes as chroma_config

            try:
                config, reasons = chroma_config(s, p, original)
            except KeyError as exc:
                raise UnknownModelError(f"{name} looks like a Chroma transformer but lacks {exc.args[0]}; the file "
                                        "is incomplete or another architecture") from None
            layout = "diffusers" if not original else ("comfyui" if p else "original")
            return FlowDetected("chroma", "chroma", layout, p, config, reasons)
        config = _flux_config(s, p, original)
        layout = "diffusers" if not original else ("comfyui" if p else "original")
        variant = "dev" if config["guidance_embeds"] else "schnell"
        if config["in_channels"] > 64:
            variant = "fill" if config["in_channels"] == 384 else "control"
        reasons = [f"{'original' if original else 'diffusers'} Flux tensor names under {p or 'the root'!r}",
                   f"{config['num_layers']} double + {config['num_single_layers']} single blocks, "
                   f"{config['num_attention_heads']}×{config['attention_head_dim']} wide",
                   "guidance embedder present (dev)" if config["guidance_embeds"] else "no guidance embedder "
                   "(schnell-style, guidance-distilled away)", f"{config['in_channels']} input channels"]
        return FlowDetected("flux", variant, layout, p, config, reasons)
    found = _detect_sd3(s, name)
    if found is not None:
        return found
    for marker, family in _LATER:
        if _prefix(s, marker) is not None:
            raise UnknownModelError(f"{name} is a {family} diffusion model; this version of nodegraph loads Flux.1 "
                                    "(dev, schnell, Fill, Canny/Depth, Kontext), SD3/SD3.5 and Chroma diffusion models")
    if any(k.startswith(("model.diffusion_model.input_blocks.", "input_blocks.", "down_blocks.")) for k in s):
        raise UnknownModelError(f"{name} is a UNet (Stable Diffusion 1/2/XL); load full checkpoints with "
                                "CheckpointLoaderSimple from models/checkpoints")
    sample = ", ".join(list(s)[:3])
    raise UnknownModelError(f"{name}: no diffusion transformer this engine knows ({len(s)} tensors, e.g. {sample}); "
                            "UNETLoader reads Flux.1 and SD3/SD3.5 files in ComfyUI, original or diffusers layout, and "
                            "SD1/SD2/SDXL UNets (LDM or diffusers names)")


def _detect_sd3(s: dict[str, Any], name: str = "this file") -> FlowDetected | None:
    """SD3/SD3.5 in ComfyUI/Stability (``joint_blocks``) or diffusers (``pos_embed.proj``) layout; None otherwise."""
    from .sd3 import DIFFUSERS_MARKER, ORIGINAL_MARKER, config_from_shapes

    for original, marker in ((True, ORIGINAL_MARKER), (False, DIFFUSERS_MARKER)):
        p = _prefix(s, marker)
        if p is None or (not original and p + "transformer_blocks.0.attn.add_q_proj.weight" not in s):
            continue
        try:
            config, reasons = config_from_shapes(s, p, original)
        except KeyError as exc:
            raise UnknownModelError(f"{name} looks like a Stable Diffusion 3 transformer but lacks {exc.args[0]}; "
                                    "the file is incomplete or another architecture") from None
        layout = "diffusers" if not original else ("comfyui" if p else "original")
        return FlowDetected("sd3", "3.5" if config["qk_norm"] else "3", layout, p, config, reasons)
    return None


def _clip_prefix(shapes: dict[str, Any]) -> str | None:
    """The prefix before CLIP's ``embeddings.*``/``encoder.layers.*`` (``text_model.`` in ComfyUI's files)."""
    for p in _PREFIXES:
        for q in ("text_model.", ""):
            if p + q + "embeddings.token_embedding.weight" in shapes and \
                    p + q + "encoder.layers.0.self_attn.q_proj.weight" in shapes:
                return p + q
    return None


def text_encoder_kind(header: Header) -> str:
    """"clip_l", "clip_g", "t5xxl" (any T5 encoder) for a text-encoder file; UnknownModelError otherwise."""
    s = header.shapes
    if _prefix(s, "encoder.block.0.layer.0.SelfAttention.q.weight") is not None:
        return "t5xxl"
    p = _clip_prefix(s)
    if p is not None:
        return "clip_g" if s[p + "embeddings.token_embedding.weight"][1] == 1280 else "clip_l"
    sample = ", ".join(list(s)[:3])
    raise UnknownModelError(f"{header.path.name} is not a text encoder this engine reads ({len(s)} tensors, e.g. "
                            f"{sample}); expected CLIP (text_model.*) or T5 (encoder.block.*) weights")


def encoder_prefix(header: Header) -> str:
    """The prefix stripped from a text encoder file's tensor names to get transformers' names."""
    p = _prefix(header.shapes, "encoder.block.0.layer.0.SelfAttention.q.weight")
    if p is not None:
        return p
    return _clip_prefix(header.shapes) or ""


__all__ = [
    "FLUX_CONFIGS",
    "FlowDetected",
    "block_count",
    "detect_transformer",
    "encoder_prefix",
    "find_layout",
    "read_config",
    "shipped_config",
    "text_encoder_kind",
]
