"""Stable Cascade's files: stage C/B UNets (UNETLoader), stage A (VAELoader), CLIP-G (CLIPLoader type
``stable_cascade``) and the all-in-one checkpoints (CheckpointLoaderSimple).

UNet files come in the original/ComfyUI layout (``nn.MultiheadAttention``'s ``attn.in_proj_weight``, stage B's
``clip_mapper``: converted with diffusers' ``convert_stable_cascade_unet_single_file_to_diffusers``) or diffusers'
(``attention.to_q``). The config is read from the tensor shapes (levels, widths, layers, repeat mappers, block types,
conditioning widths); the shipped configs (``configs/stable_cascade``) are the full and lite releases. Stage A is
ComfyUI's ``StageA`` = diffusers' ``PaellaVQModel`` but for the codebook's name. The all-in-one checkpoints hold the
UNet under ``model.diffusion_model.``, CLIP-G under ``text_encoder.`` and the stage's VAE under ``vae.`` (stage A in
stage B's file; stage C's holds the EfficientNet encoder, which is not supported here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, LatentFormat, TextEncoder, VAEModel

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "stable_cascade"
UNET = "model.diffusion_model."
#: ComfyUI's latent → RGB preview factors (SC_Prior, SC_B), applied to the MODEL's latents
_SC_PRIOR_RGB = ((-0.0326, -0.0204, -0.0127), (-0.1592, -0.0427, 0.0216), (0.0873, 0.0638, -0.0020),
                 (-0.0602, 0.0442, 0.1304), (0.0800, -0.0313, -0.1796), (-0.0810, -0.0638, -0.1581),
                 (0.1791, 0.1180, 0.0967), (0.0740, 0.1416, 0.0432), (-0.1745, -0.1888, -0.1373),
                 (0.2412, 0.1577, 0.0928), (0.1908, 0.0998, 0.0682), (0.0209, 0.0365, -0.0092),
                 (0.0448, -0.0650, -0.1728), (-0.1658, -0.1045, -0.1308), (0.0542, 0.1545, 0.1325),
                 (-0.0352, -0.1672, -0.2541))
_SC_B_RGB = ((0.1121, 0.2006, 0.1023), (-0.2093, -0.0222, -0.0195), (-0.3087, -0.1535, 0.0366),
             (0.0290, -0.1574, -0.4078))
_B_SCALE = 1.0 / 0.43
#: stage C's latent as the MODEL sees it (ComfyUI's SC_Prior: scale 1; 42 px per cell at the default compression)
STAGE_C_LATENT = LatentFormat(channels=16, downscale=32, scaling_factor=1.0, shift_factor=0.0,
                              rgb=_SC_PRIOR_RGB + ((0.0, 0.0, 0.0),))
#: stage B's latent (ComfyUI's SC_B: stage A latents × 1/0.43, 4 px per cell; the preview rows act on unscaled ones)
STAGE_B_LATENT = LatentFormat(channels=4, downscale=4, scaling_factor=_B_SCALE, shift_factor=0.0,
                              rgb=tuple(tuple(v * _B_SCALE for v in row) for row in _SC_B_RGB) + ((0.0, 0.0, 0.0),))
#: ComfyUI's sampling_settings shift of each stage
DEFAULT_SHIFT = {"c": 2.0, "b": 1.0}
_MARKERS = {"c": "clip_txt_mapper.weight", "b": "effnet_mapper.0.weight"}


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped config (``stage_c``, ``stage_c_lite``, ``stage_b``, ``stage_b_lite``, ``stage_a``)."""
    return json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def unet_prefix(shapes: dict[str, Any]) -> str | None:
    """The prefix of a Stable Cascade UNet's tensors ("" or ``model.diffusion_model.``), else None."""
    for prefix in ("", UNET):
        if any(prefix + m in shapes for m in _MARKERS.values()) and prefix + "embedding.1.weight" in shapes:
            return prefix
    return None


def is_cascade_unet(header: Header) -> bool:
    """Whether a diffusion-model file holds a Stable Cascade stage C or stage B UNet."""
    return unet_prefix(header.shapes) is not None


def _indices(shapes: dict[str, Any], head: str) -> list[int]:
    found = {int(k[len(head):].split(".")[0]) for k in shapes if k.startswith(head) and k[len(head):][:1].isdigit()}
    return sorted(found)


def _types(shapes: dict[str, Any], level: str) -> tuple[list[str], int]:
    """(block types of one layer, how many layers) of ``down_blocks.i.``/``up_blocks.i.``."""
    order = []
    for j in _indices(shapes, level):
        p = f"{level}{j}."
        kind = ("SDCascadeResBlock" if p + "depthwise.weight" in shapes else
                "SDCascadeTimestepBlock" if p + "mapper.weight" in shapes else "SDCascadeAttnBlock")
        order.append(kind)
    res = order.count("SDCascadeResBlock")
    width = len(order) // max(res, 1)
    return order[:width], res


def derive_config(shapes: dict[str, Any]) -> dict[str, Any]:
    """diffusers' StableCascadeUNet config of a UNet's tensors (diffusers names, no prefix)."""
    stage = "c" if _MARKERS["c"] in shapes else "b"
    levels = _indices(shapes, "down_blocks.")
    widths = [int(shapes[f"down_blocks.{i}.0.depthwise.weight"][0]) for i in levels]
    types, down, up = [], [], []
    for i in levels:
        kinds, count = _types(shapes, f"down_blocks.{i}.")
        types.append(kinds)
        down.append(count)
        up.append(_types(shapes, f"up_blocks.{i}.")[1])
    attn = next((k for k in shapes if k.endswith(".kv_mapper.1.weight")), None)
    cond = int(shapes[attn][1]) if attn else int(shapes.get(_MARKERS["c"], (2048,))[0])
    pooled = shapes["clip_txt_pooled_mapper.weight"]
    patch = 1 if stage == "c" else 2
    t_conds = [n for n in ("sca", "crp") if f"down_blocks.0.1.mapper_{n}.weight" in shapes]
    config: dict[str, Any] = {
        "in_channels": int(shapes["embedding.1.weight"][1]) // patch ** 2,
        "out_channels": int(shapes["clf.1.weight"][0]) // patch ** 2,
        "timestep_ratio_embedding_dim": int(shapes["down_blocks.0.1.mapper.weight"][1]),
        "patch_size": patch, "conditioning_dim": cond, "block_out_channels": widths,
        "num_attention_heads": [max(1, w // 64) if "SDCascadeAttnBlock" in t else 0 for w, t in zip(widths, types)],
        "down_num_layers_per_block": down, "up_num_layers_per_block": up,
        "down_blocks_repeat_mappers": [1 + len(_indices(shapes, f"down_repeat_mappers.{i}.")) for i in levels],
        "up_blocks_repeat_mappers": [1 + len(_indices(shapes, f"up_repeat_mappers.{i}.")) for i in levels],
        "block_types_per_layer": types,
        "clip_text_in_channels": int(shapes[_MARKERS["c"]][1]) if stage == "c" else None,
        "clip_text_pooled_in_channels": int(pooled[1]), "clip_seq": int(pooled[0]) // cond,
        "clip_image_in_channels": int(shapes["clip_img_mapper.weight"][1]) if stage == "c" else None,
        "effnet_in_channels": int(shapes[_MARKERS["b"]][1]) if stage == "b" else None,
        "pixel_mapper_in_channels": int(shapes["pixels_mapper.0.weight"][1]) if stage == "b" else None,
        "kernel_size": int(shapes["down_blocks.0.0.depthwise.weight"][-1]),
        "self_attn": True, "timestep_conditioning_type": t_conds,
        "switch_level": [False] * (len(levels) - 1) if any(".blocks." in k for k in shapes
                                                            if k.startswith("down_downscalers.")) else None,
    }
    for name in ("stage_c", "stage_c_lite", "stage_b", "stage_b_lite"):  # the releases: their dropout and heads
        shipped = shipped_config(name)
        if all(shipped[k] == v for k, v in config.items() if k not in ("num_attention_heads",)):
            config.update(num_attention_heads=shipped["num_attention_heads"], dropout=shipped["dropout"])
            config["_release"] = name
            break
    else:
        config["dropout"] = [0.0] * len(levels)
    return config


def to_diffusers(state: dict[str, Any]) -> dict[str, Any]:
    """A UNet state dict in diffusers' names (the original/ComfyUI layout converted by diffusers' own helper)."""
    if not any(k.endswith("in_proj_weight") or k.startswith("clip_mapper.") for k in state):
        return state
    from diffusers.loaders.single_file_utils import (
        convert_stable_cascade_unet_single_file_to_diffusers,
    )

    return convert_stable_cascade_unet_single_file_to_diffusers(state)


def unet_from_state(state: dict[str, Any], name: str, weight_dtype: str = "default",
                    dtype: Any = None) -> DiffusionModel:
    """MODEL from a stage C or stage B UNet's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import StableCascadeUNet

    from ..flow.loading import filled_model
    from .sampling import FAMILY, stage_of
    from .schedule import CascadeSigmas

    prefix = unet_prefix({k: None for k in state})
    if prefix is None:
        raise UnknownModelError(f"{name} holds no Stable Cascade stage C/B UNet")
    if prefix:
        state = strip_prefix(state, prefix)
    state = to_diffusers(state)
    config = derive_config({k: tuple(v.shape) for k, v in state.items()})
    release = config.pop("_release", "a custom size")
    compute = dtype or torch.float32
    unet = filled_model(StableCascadeUNet, config, state, name, compute, weight_dtype)
    stage = stage_of(unet)
    log.info("%s: Stable Cascade stage %s (%s)", name, stage.upper(), release)
    return DiffusionModel(unet=unet, scheduler_config={}, arch=f"stable_cascade_{stage}", source=name,
                          latent=STAGE_C_LATENT if stage == "c" else STAGE_B_LATENT, family=FAMILY,
                          flow=CascadeSigmas(shift=DEFAULT_SHIFT[stage]))


def load_cascade_unet(path: Path, header: Header, name: str, weight_dtype: str = "default",
                      dtype: Any = None) -> DiffusionModel:
    """MODEL from a stage C/B file (``families.TRANSFORMER_FILES`` loader)."""
    from safetensors.torch import load_file

    return unet_from_state(load_file(str(path)), name, weight_dtype, dtype)


def is_stage_a(keys: list[str]) -> bool:
    """Whether a VAE file's tensors are stage A (the Paella VQGAN), either codebook name."""
    names = set(keys)
    return "up_blocks.0.0.weight" in names and bool(names & {"vquantizer.codebook.weight",
                                                             "vquantizer.embedding.weight"})


def stage_a_from_state(state: dict[str, Any], name: str) -> VAEModel:
    """VAE from stage A's tensors (``families.VAE_FILES`` reader)."""
    from accelerate import init_empty_weights

    from ..flow.loading import fill
    from ..loading import quiet_libraries
    from .vae import PaellaVAE, paella_class

    state = {("vquantizer.embedding.weight" if k == "vquantizer.codebook.weight" else k): v
             for k, v in state.items() if not k.startswith("vquantizer.ema_")}
    width = int(state["in_block.1.weight"].shape[0])
    levels = 1 + len([k for k in state if k.startswith("down_blocks.") and k.endswith(".weight")
                      and len(state[k].shape) == 4 and state[k].shape[-1] == 4])
    config = dict(shipped_config("stage_a"), embed_dim=width * 2 ** (levels - 1), levels=levels,
                  latent_channels=int(state["vquantizer.embedding.weight"].shape[1]),
                  num_vq_embeddings=int(state["vquantizer.embedding.weight"].shape[0]),
                  bottleneck_blocks=sum(1 for k in state if k.startswith("up_blocks.") and k.endswith(".gammas"))
                  - (levels - 1))
    config.pop("_class_name")
    with quiet_libraries(), init_empty_weights():
        model = paella_class()(**config)
    fill(model, state, None, name)
    return VAEModel(vae=PaellaVAE(model.float()), scaling_factor=1.0 / 0.43, source=name)


def load_cascade_clip(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP (arch ``stable_cascade``) from a CLIP-G text-encoder file."""
    from ..flow.loading import load_text_encoder
    from ..loading import clip_tokenizer

    _kind, model = load_text_encoder(Path(path), name, dtype, "clip_g")
    return TextEncoder(tokenizers=(clip_tokenizer(),), encoders=(model,), arch="stable_cascade")


def load_cascade_clips(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry: CLIPLoader type stable_cascade takes one CLIP-G file."""
    if len(paths) != 1:
        raise ValueError(f"type stable_cascade takes one text encoder file (CLIP-G); got {len(paths)}")
    return load_cascade_clip(paths[0], names[0], dtype)


def _clip_from_state(state: dict[str, Any], path: Path, name: str, dtype: Any) -> TextEncoder:
    """CLIP-G from a checkpoint's ``text_encoder.`` tensors (ComfyUI's ``clip_g.`` names or transformers')."""
    from ..flow.loading import text_encoder_from_state
    from ..loading import clip_tokenizer

    names: dict[str, Any] = {}
    for key in list(state):
        value = state.pop(key)
        if "text_model." in key:
            names[key[key.index("text_model."):]] = value
        elif key.endswith("text_projection.weight"):
            names["text_projection.weight"] = value
        elif key.endswith("text_projection"):  # OpenCLIP's [width, projection] matrix
            names["text_projection.weight"] = value.t().contiguous()
    state = names
    header = Header(path, {k: tuple(v.shape) for k, v in state.items()}, {})
    _, model = text_encoder_from_state(state, header, name, dtype, "clip_g")
    return TextEncoder(tokenizers=(clip_tokenizer(),), encoders=(model,), arch="stable_cascade")


def cascade_checkpoint(path: Path, name: str, dtype: Any = None) -> Any:
    """MODEL, CLIP and VAE of an all-in-one stage C or stage B checkpoint; None for other files
    (``families.CHECKPOINT_FILES``)."""
    from safetensors.torch import load_file

    from ..types import Checkpoint

    path = Path(path)
    header = read_header(path)
    if unet_prefix(header.shapes) != UNET:
        return None
    state = load_file(str(path))
    parts = {p: {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)} for p in ("text_encoder.", "vae.")}
    model = unet_from_state(state, name, "default", dtype)
    if parts["text_encoder."]:
        clip = _clip_from_state(parts["text_encoder."], path, name, dtype)
    else:  # as ComfyUI: the checkpoint loads, its CLIP says what to use when it is used
        log.info("%s: no text encoder in the checkpoint", name)
        clip = TextEncoder(tokenizers=(), encoders=(), arch="stable_cascade")
    vae_state = parts["vae."]
    if is_stage_a(list(vae_state)):
        vae = stage_a_from_state(vae_state, name)
    else:
        from .vae import missing_vae

        vae = missing_vae(name, "the stage C EfficientNet encoder/previewer" if vae_state else "no VAE")
    return Checkpoint(model=model, clip=clip, vae=vae)


__all__ = ["CONFIGS", "DEFAULT_SHIFT", "STAGE_B_LATENT", "STAGE_C_LATENT", "cascade_checkpoint", "derive_config",
           "is_cascade_unet", "is_stage_a", "load_cascade_clip", "load_cascade_clips", "load_cascade_unet",
           "shipped_config", "stage_a_from_state", "to_diffusers", "unet_from_state", "unet_prefix"]
