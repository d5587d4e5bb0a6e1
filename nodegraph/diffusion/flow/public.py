"""What the split-loader and Flux node packs use (exported through ``nodegraph.api``'s flow-families block).

Split files are found in both of ComfyUI's folder names of a pair (``diffusion_models`` + ``unet``,
``text_encoders`` + ``clip``) and listed together. Loads go through the engine's ModelManager (one owner of model
memory, RAM budget, reload after eviction), keyed by every file's fingerprint and the weight dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The folder pairs ComfyUI lists together: the newer name first.
FOLDER_PAIRS = {"diffusion_models": ("diffusion_models", "unet"), "text_encoders": ("text_encoders", "clip")}


def split_model_names(config: Any, kind: str) -> list[str]:
    """Model files of ``kind`` ("diffusion_models" or "text_encoders") in both folders of its pair, sorted."""
    from nodegraph.models import folders

    if config is None:
        return []
    names: set[str] = set()
    for folder in FOLDER_PAIRS[kind]:
        names.update(folders.list_models(config, folder))
    return sorted(names)


def diffusion_model_names(config: Any) -> list[str]:
    """UNETLoader's unet_name options: models/diffusion_models and models/unet."""
    return split_model_names(config, "diffusion_models")


def text_encoder_names(config: Any) -> list[str]:
    """CLIPLoader's clip_name options: models/text_encoders and models/clip."""
    return split_model_names(config, "text_encoders")


def split_model_path(config: Any, kind: str, name: str) -> Path:
    """The path of ``name`` in the first folder of ``kind``'s pair that has it (never outside the folder)."""
    from ..loading import resolve_model

    tried = []
    for folder in FOLDER_PAIRS[kind]:
        try:
            path = resolve_model(config, folder, name)
        except FileNotFoundError:
            tried.append(f"models/{folder}")
            continue
        if path.exists():
            return path
        tried.append(f"models/{folder}")
    raise FileNotFoundError(f"{name!r} is in neither {' nor '.join(tried)}; put the file there")


def _manager(ctx: Any) -> Any:
    from nodegraph.models import model_manager

    return model_manager(ctx.services, ctx.config)


def _dtype(manager: Any) -> Any:
    devices = manager.devices
    return devices.dtype if devices.device.type != "cpu" else None


def load_diffusion_model(ctx: Any, name: str, weight_dtype: str = "default") -> Any:
    """A MODEL handle for diffusion-transformer file ``name`` (UNETLoader)."""
    from nodegraph.models.manager import fingerprint

    from .loading import load_transformer

    path = split_model_path(ctx.config, "diffusion_models", name)
    ctx.models.check_loadable(path)
    manager = _manager(ctx)
    dtype = _dtype(manager)
    key = ("diffusion_model", fingerprint(path), weight_dtype, str(dtype))
    return manager.load("diffusion_model", path, lambda: load_transformer(path, name, weight_dtype, dtype),
                        name=name, key=key)


def load_split_clip(ctx: Any, names: Sequence[str], clip_type: str) -> Any:
    """A CLIP handle for text-encoder files ``names`` of ComfyUI type ``clip_type`` (CLIPLoader/DualCLIPLoader)."""
    from nodegraph.models.manager import fingerprint

    from .loading import load_clip

    paths = [split_model_path(ctx.config, "text_encoders", n) for n in names]
    for path in paths:
        ctx.models.check_loadable(path)
    manager = _manager(ctx)
    dtype = _dtype(manager)
    key = ("text_encoders", clip_type, tuple(fingerprint(p) for p in paths), str(dtype))
    size = sum(p.stat().st_size for p in paths)
    return manager.load("text_encoders", paths[0], lambda: load_clip(paths, list(names), clip_type, dtype),
                        name=" + ".join(names), key=key, size=size)


def encode_flux_text(ctx: Any, clip: Any, clip_l: str, t5xxl: str) -> list:
    """CONDITIONING from a Flux CLIP with separate CLIP-L and T5 prompts (CLIPTextEncodeFlux)."""
    from .text import encode_flux

    devices = ctx.devices
    with ctx.models.use(clip) as (loaded,):
        if loaded.arch != "flux":
            raise ValueError(f"this CLIP is {loaded.arch}, not a Flux CLIP-L + T5 pair; load it with DualCLIPLoader "
                             "type flux")
        with devices.use(*loaded.encoders):
            return encode_flux(loaded, clip_l, t5xxl, devices.device, int(ctx.config.limits.max_text_chunks))


def encode_sd3_text(ctx: Any, clip: Any, clip_l: str, clip_g: str, t5xxl: str, empty_padding: str) -> list:
    """CONDITIONING from an SD3 CLIP with separate CLIP-L, CLIP-G and T5 prompts (CLIPTextEncodeSD3)."""
    from .sd3_text import encode_sd3

    devices = ctx.devices
    with ctx.models.use(clip) as (loaded,):
        if loaded.arch != "sd3":
            raise ValueError(f"this CLIP is {loaded.arch}, not an SD3 text encoder set; load it with "
                             "TripleCLIPLoader (or CLIPLoader/DualCLIPLoader type sd3)")
        with devices.use(*[e for e in loaded.encoders if e is not None]):
            return encode_sd3(loaded, clip_l, clip_g, t5xxl, devices.device, int(ctx.config.limits.max_text_chunks),
                              empty_padding)


#: The T5 tokenizer keys T5TokenizerOptions sets (ComfyUI's; nodegraph's T5 encoders read the t5xxl ones).
T5_KINDS = ("t5xxl", "pile_t5xl", "t5base", "mt5xl", "umt5xxl")


def with_t5_options(clip: Any, min_padding: int, min_length: int) -> Any:
    """The CLIP (handle or TextEncoder, weights shared) with T5TokenizerOptions' padding options set."""
    from nodegraph.models.handles import derive, is_handle

    current = dict(clip.changes).get("options", ()) if is_handle(clip) else getattr(clip, "options", ())
    options = dict(current)
    for kind in T5_KINDS:
        options[f"{kind}_min_padding"] = int(min_padding)
        options[f"{kind}_min_length"] = int(min_length)
    return derive(clip, options=tuple(options.items()))


__all__ = ["FOLDER_PAIRS", "T5_KINDS", "diffusion_model_names", "encode_flux_text", "encode_sd3_text",
           "load_diffusion_model", "load_split_clip", "split_model_names", "split_model_path", "text_encoder_names",
           "with_t5_options"]
