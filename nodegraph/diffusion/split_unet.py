"""Stable Diffusion UNets saved alone (SD1.x, SD2.x, SDXL, SDXL refiner) for UNETLoader, offline.

Layouts: ComfyUI's/the original LDM names (``input_blocks.*``, ``middle_block.*``, ``output_blocks.*``, at the root
or under ``model.diffusion_model.``/``diffusion_model.``) and diffusers' names (``conv_in.*``, ``down_blocks.*``, at
the root or under ``unet.``). Diffusers names are mapped to LDM names first (``ldm.unet_to_ldm``), so both layouts
go through the same path as a full checkpoint's UNet: the architecture follows from the shapes as in
``detect.detect`` (cross-attention width, ``label_emb`` for SDXL's size conditioning, channel widths), the shipped
configs of ``configs/{sd1,sd2,sdxl,sdxl_refiner}`` when the widths are the standard ones, else a config derived from
the shapes (``derive.unet_config``); a nodegraph export's header configs win, as for checkpoints. The weights are
converted with diffusers' single-file converter (``single_file.unet``).

The MODEL's latent format is its family's (SD1/SD2 0.18215, SDXL 0.13025; a header's VAE config when it carries
one). No VAE is at hand, so the latent preview projection stays unfitted. ``weight_dtype`` fp8 stores the weights in
float8 and computes in the device dtype (diffusers' layerwise casting), as for flow transformers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .detect import (
    _SD2_V_KEY,
    METADATA_KEY,
    UNET,
    Detected,
    Header,
    UnknownModelError,
    _context_dim,
    _edit,
    _prediction_type,
    arch_of,
    shipped_files,
    stored_files,
)
from .types import DiffusionModel, LatentFormat

log = logging.getLogger(__name__)

_LDM_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")
_DIFFUSERS_PREFIXES = ("unet.", "")
#: Root tensors that are markers, not weights (v-prediction, zero terminal SNR).
_MARKERS = ("v_pred", "ztsnr")
#: Scaling factor of each family's VAE latents.
SD_SCALING, SDXL_SCALING = 0.18215, 0.13025


def unet_layout(header: Header) -> tuple[str, str] | None:
    """("ldm" | "diffusers", prefix) when ``header``'s file holds a Stable Diffusion UNet's names, else None."""
    s = header.shapes
    for p in _LDM_PREFIXES:
        if p + "input_blocks.0.0.weight" in s or (p and any(k.startswith(p + "input_blocks.") for k in s)):
            return "ldm", p
    for p in _DIFFUSERS_PREFIXES:
        if p + "conv_in.weight" in s and any(k.startswith(p + "down_blocks.") for k in s):
            return "diffusers", p
    if any(k.startswith(("input_blocks.", "down_blocks.")) for k in s) and "clf.1.weight" not in s:  # not Cascade
        return ("ldm", "") if any(k.startswith("input_blocks.") for k in s) else ("diffusers", "")
    return None


def is_sd_unet(header: Header) -> bool:
    """Whether a diffusion-model file holds an SD1/SD2/SDXL UNet (either layout) rather than a transformer."""
    return unet_layout(header) is not None


def ldm_names(header: Header) -> dict[str, str]:
    """LDM name (``model.diffusion_model.*``) → the file's name, for every UNet tensor (markers keep their names)."""
    layout = unet_layout(header)
    if layout is None:
        raise UnknownModelError(f"{header.path.name} holds no Stable Diffusion UNet tensors")
    kind, p = layout
    names = {k: k for k in header.shapes if k in _MARKERS}
    inner = {k[len(p):]: k for k in header.shapes if k.startswith(p) and k not in _MARKERS}
    if kind == "ldm":
        names.update({UNET + k: f for k, f in inner.items()})
        return names
    from .ldm import unet_to_ldm

    layers = {int(k.split(".")[3]) for k in inner if k.startswith("down_blocks.0.resnets.")}
    if not layers:
        raise UnknownModelError(f"{header.path.name}: diffusers UNet names without down_blocks.0.resnets.*; the file "
                                "is incomplete")
    try:
        renamed = unet_to_ldm({k: k for k in inner}, max(layers) + 1)
    except (KeyError, ValueError, IndexError) as exc:
        raise UnknownModelError(f"{header.path.name}: a tensor does not fit a diffusers UNet2DConditionModel "
                                f"({exc}); the file is another architecture") from None
    names.update({ldm: inner[k] for ldm, k in renamed.items()})
    return names


def _arch_candidate(ctx: int | None, label: Any) -> str | None:
    if label:
        return {2048: "sdxl", 1280: "sdxl_refiner", 1024: "sd2"}.get(ctx or 0)
    return {768: "sd1", 1024: "sd2"}.get(ctx or 0)


def _matches(shipped: dict[str, Any], derived: dict[str, Any]) -> bool:
    keys = ("block_out_channels", "layers_per_block", "cross_attention_dim", "down_block_types",
            "use_linear_projection", "transformer_layers_per_block")
    for key in keys:
        a, b = shipped.get(key), derived.get(key)
        if key == "transformer_layers_per_block" and not isinstance(a, (list, tuple)):
            a = [a or 1] * len(derived["block_out_channels"])
        a = list(a) if isinstance(a, (list, tuple)) else a
        b = list(b) if isinstance(b, (list, tuple)) else b
        if a != b:
            return False
    return True


def detect_unet(header: Header, names: dict[str, str]) -> Detected:
    """What a UNet-only file is and the configs that load it, from its shapes (as ``detect.detect`` does for
    checkpoints; ``names`` from ``ldm_names``); ``UnknownModelError`` naming what was found otherwise."""
    from . import derive

    name = header.path.name
    if METADATA_KEY in header.metadata:  # a nodegraph export: its configs, validated as data
        files = stored_files(name, header.metadata[METADATA_KEY])
        sched = json.loads(files["scheduler/scheduler_config.json"])
        return Detected(arch=arch_of(json.loads(files["unet/config.json"]), "text_encoder_2/config.json" in files),
                        prediction_type=str(sched.get("prediction_type", "epsilon")), files=files,
                        reasons=["configs stored in the file's header by nodegraph"])
    shapes = {ldm: header.shapes[f] for ldm, f in names.items()}
    ldm = Header(header.path, shapes, header.metadata)
    missing = [k for k in ("input_blocks.0.0.weight", "out.2.weight", "time_embed.0.weight") if UNET + k not in shapes]
    if missing:
        raise UnknownModelError(f"{name} looks like a Stable Diffusion UNet ({len(shapes)} tensors) but lacks "
                                f"{', '.join(missing)}; the file is incomplete or another architecture")
    try:
        derived = derive.unet_config(ldm)
    except KeyError as exc:
        raise UnknownModelError(f"{name}: a Stable Diffusion UNet without {exc.args[0]}; the file is incomplete or "
                                "another architecture") from None
    ctx, label = _context_dim(ldm), shapes.get(UNET + "label_emb.0.0.weight")
    in_channels = shapes[UNET + "input_blocks.0.0.weight"][1]
    reasons = [f"{'diffusers' if any('down_blocks.' in f for f in names.values()) else 'LDM'} UNet names",
               f"cross-attention width {ctx}", f"{in_channels} input channels",
               f"channels {derived['block_out_channels']}"]
    arch = _arch_candidate(ctx, label)
    files = shipped_files(arch) if arch else {}
    if arch and _matches(json.loads(files["unet/config.json"]), derived):
        reasons.append(f"the widths of {arch}")
    else:  # unusual sizes: the derived config, with the scheduler of its family
        family = "sdxl" if label else "sd1"
        if label:  # SDXL's size conditioning: 256-wide time embeddings, by SDXL's convention
            derived.update(addition_time_embed_dim=256)
        files = {"unet/config.json": json.dumps(derived),
                 "scheduler/scheduler_config.json": shipped_files(family)["scheduler/scheduler_config.json"]}
        arch = ("sdxl_refiner" if ctx == 1280 else "sdxl") if label else "custom"
        reasons.append(f"config derived from the shapes ({family} scheduler)")
    adm = label if arch == "sd2" else None  # SD2.1-unCLIP: image embedding as class labels, v-prediction
    if adm:
        _edit(files, "unet/config.json", class_embed_type="projection", projection_class_embeddings_input_dim=adm[1])
        prediction = "v_prediction"
    else:
        plain = Header(header.path, {k: v for k, v in shapes.items() if k != _SD2_V_KEY}, header.metadata)
        before = len(reasons)
        prediction = _prediction_type(plain, arch, reasons)
        if arch == "sd2" and len(reasons) == before and _SD2_V_KEY in names:  # ComfyUI's SD2 v statistic
            from safetensors import safe_open

            with safe_open(str(header.path), framework="pt") as f:
                spread = float(f.get_tensor(names[_SD2_V_KEY]).float().std(unbiased=False))
            reasons.append(f"SD2 final norm1.bias std {spread:.3f} ({'>' if spread > 0.09 else '<='} 0.09)")
            prediction = "v_prediction" if spread > 0.09 else "epsilon"
    if in_channels != 4:
        _edit(files, "unet/config.json", in_channels=in_channels)
    if arch == "sd2":
        _edit(files, "unet/config.json", sample_size=96 if prediction == "v_prediction" else 64)
    extra = {"rescale_betas_zero_snr": True} if "ztsnr" in shapes else {}
    _edit(files, "scheduler/scheduler_config.json", prediction_type=prediction, **extra)
    return Detected(arch=arch, prediction_type=prediction, files=files, reasons=reasons, inpaint=in_channels == 9)


def _latent(found: Detected, unet_config: dict[str, Any]) -> LatentFormat:
    channels = int(unet_config.get("out_channels", 4))
    if "vae/config.json" in found.files:  # a nodegraph export carries its VAE's config
        vae = found.config("vae/config.json")
        return LatentFormat(channels=channels, downscale=2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1),
                            scaling_factor=float(vae.get("scaling_factor", SD_SCALING)),
                            shift_factor=float(vae.get("shift_factor") or 0.0))
    xl = unet_config.get("addition_embed_type") == "text_time"
    return LatentFormat(channels=channels, downscale=8, scaling_factor=SDXL_SCALING if xl else SD_SCALING)


def load_sd_unet(path: Path, header: Header, name: str, weight_dtype: str = "default",
                 dtype: Any = None) -> DiffusionModel:
    """MODEL (family "unet") from a UNet-only file in LDM or diffusers layout, in ``dtype`` (None: float32)."""
    import torch
    from safetensors.torch import load_file

    from . import single_file
    from .flow.loading import _float8
    from .loading import quiet_libraries

    names = ldm_names(header)
    found = detect_unet(header, names)
    log.info("%s: %s UNet (%s)", name, found.arch, "; ".join(found.reasons))
    storage = _float8(weight_dtype) if weight_dtype != "default" else None  # refuse early, before reading
    state = load_file(str(path))
    ldm = {k: state.pop(f) for k, f in names.items() if k.startswith(UNET)}
    del state
    config = found.config("unet/config.json")
    with quiet_libraries():
        unet = single_file.unet(ldm, config, dtype, name)
    if storage is not None:
        unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=dtype or torch.float32)
    sched = {k: v for k, v in found.config("scheduler/scheduler_config.json").items()
             if not k.startswith("_") or k == "_class_name"}
    return DiffusionModel(unet=unet, scheduler_config=sched, arch=found.arch, source=name,
                          latent=_latent(found, config))


__all__ = ["SDXL_SCALING", "SD_SCALING", "detect_unet", "is_sd_unet", "ldm_names", "load_sd_unet", "unet_layout"]
