"""LTX-Video and LTX-2 latent upsamplers (ComfyUI's LATENT_UPSCALE_MODEL from ``models/latent_upscale_models``).

An upsampler is a small convolutional network (``initial_conv`` → ``res_blocks`` → ``upsampler`` →
``post_upsample_res_blocks`` → ``final_conv``) that doubles a video latent spatially (0.9.7+ and LTX-2 spatial
upscalers), temporally (``2T - 1`` latent frames) or both, on the VAE's *raw* latents: ``upsample_latent``
un-normalises a LATENT with the VAE's per-channel statistics, runs the network and normalises the result again, as
ComfyUI's ``LTXVLatentUpsampler`` does. Files are safetensors with Lightricks' (= ComfyUI's = diffusers') tensor
names; the config is read from the tensor shapes, with the file's ``config`` metadata deciding only what shapes
cannot tell (a 1.5× or 0.75× rational resampler). Plain pixel-shuffle models load as diffusers'
``LTXLatentUpsamplerModel``, rational-resampler ones (LTX-2) as ``LTX2LatentUpsamplerModel``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "ltx_upsampler"
#: The shipped configs (``configs/ltx_upsampler/<name>.json``): full-size models, checked by parameter count.
CONFIG_NAMES = ("ltxv_spatial_x2_0.9.7", "ltx2_spatial_x2_1.0")
MARK = "post_upsample_res_blocks.0.conv2.bias"
#: HunyuanVideo 1.5's super-resolution models, which ComfyUI's LatentUpscaleModelLoader also reads.
HUNYUAN_SR_MARKS = ("blocks.0.block.0.conv.weight", "up.0.block.0.conv1.conv.weight")
#: Rational resampler: numerator (pixel-shuffle factor) → scale; 3 with a denominator of 4 (0.75) needs metadata.
_RATIONAL = {2: 2.0, 3: 1.5, 4: 4.0}
_SCALES = (0.75, 1.5, 2.0, 4.0)


@dataclass
class LatentUpscaleModel:
    """LATENT_UPSCALE_MODEL: an LTX latent upsampler and what it does to a latent's size."""

    model: Any  # diffusers LTXLatentUpsamplerModel or LTX2LatentUpsamplerModel
    spatial: float  # factor on height and width (1.0 when it only upsamples in time)
    temporal: bool  # whether T latent frames become 2T - 1
    channels: int
    source: str = ""

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The latent shape ``[B, C, T, h, w]`` this model makes of ``shape``."""
        b, c, t, h, w = shape
        return (b, c, 2 * t - 1 if self.temporal else t, int(h * self.spatial), int(w * self.spatial))


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped upsampler config (``configs/ltx_upsampler/<name>.json``), ``_class_name`` included."""
    return json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))


def is_ltx_upsampler(keys: Any) -> bool:
    """Whether tensor names are an LTX latent upsampler's."""
    keys = set(keys)
    return MARK in keys and "initial_conv.weight" in keys and "final_conv.weight" in keys


def _metadata_config(metadata: dict[str, str], name: str) -> dict[str, Any]:
    from nodegraph import jsonsafe

    raw = metadata.get("config")
    if not raw:
        return {}
    try:
        data = jsonsafe.loads(raw)
    except ValueError as exc:
        raise UnknownModelError(f"{name}: its 'config' metadata is not valid JSON ({exc}); re-export the file or "
                                "remove the entry") from None
    return data if isinstance(data, dict) else {}


def _count(shapes: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in shapes if k.startswith(prefix)})


def config_from_shapes(shapes: dict[str, Any], name: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The diffusers config (with ``_class_name``) of an upsampler from its tensor shapes (name → shape)."""
    if not is_ltx_upsampler(shapes):
        raise UnknownModelError(f"{name} is not an LTX latent upsampler (no {MARK}); put "
                                "ltxv-spatial-upscaler-*.safetensors or ltx-2-spatial-upscaler-*.safetensors in "
                                "models/latent_upscale_models")
    first = tuple(shapes["initial_conv.weight"])
    mid, channels, dims = int(first[0]), int(first[1]), len(first) - 2
    if mid % 32:
        raise UnknownModelError(f"{name}: {mid} middle channels is not a multiple of 32 (GroupNorm(32)); the file is "
                                "not an LTX latent upsampler")
    config: dict[str, Any] = {"in_channels": channels, "mid_channels": mid,
                              "num_blocks_per_stage": _count(shapes, "res_blocks."), "dims": dims}
    meta = _metadata_config(metadata or {}, name)
    if "upsampler.conv.weight" in shapes:  # SpatialRationalResampler
        num = round((int(shapes["upsampler.conv.weight"][0]) // mid) ** 0.5)
        scale = float(meta.get("spatial_scale", _RATIONAL.get(num, 0.0)))
        if num not in _RATIONAL or scale not in _SCALES or (num == 3) != (scale in (0.75, 1.5)):
            raise UnknownModelError(f"{name}: a rational resampler of ×{num} pixel shuffle with scale {scale} is not "
                                    f"one of {list(_SCALES)}; the file is not a supported LTX latent upsampler")
        return dict(config, _class_name="LTX2LatentUpsamplerModel", spatial_upsample=True, temporal_upsample=False,
                    rational_spatial_scale=scale, use_rational_resampler=True)
    up = shapes.get("upsampler.0.weight")
    if up is None:
        raise UnknownModelError(f"{name} lacks the upsampler convolution (upsampler.0.weight or upsampler.conv.weight);"
                                " the file is incomplete")
    factor = int(up[0]) // mid
    kinds = {8: (True, True), 4: (True, False), 2: (False, True)}
    if factor not in kinds or (factor == 4) != (len(up) == 4):
        raise UnknownModelError(f"{name}: an upsampler convolution of shape {tuple(up)} is neither spatial (4×), "
                                "temporal (2×) nor both (8×) over the middle channels; not an LTX latent upsampler")
    spatial, temporal = kinds[factor]
    return dict(config, _class_name="LTXLatentUpsamplerModel", spatial_upsample=spatial, temporal_upsample=temporal)


def _classes() -> dict[str, Any]:
    from diffusers.pipelines.ltx.modeling_latent_upsampler import (
        LTXLatentUpsamplerModel,
    )
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    return {"LTXLatentUpsamplerModel": LTXLatentUpsamplerModel, "LTX2LatentUpsamplerModel": LTX2LatentUpsamplerModel}


def build_empty(config: dict[str, Any]) -> Any:
    """The diffusers upsampler of ``config`` (with ``_class_name``) on the meta device."""
    from accelerate import init_empty_weights

    from ..loading import quiet_libraries

    config = dict(config)
    cls = _classes()[config.pop("_class_name")]
    with quiet_libraries(), init_empty_weights(include_buffers=False):
        return cls.from_config(config)


def _describe(model: Any, config: dict[str, Any], name: str) -> LatentUpscaleModel:
    spatial = 1.0
    if config["spatial_upsample"]:
        spatial = float(config.get("rational_spatial_scale", 2.0)) if config.get("use_rational_resampler") else 2.0
    return LatentUpscaleModel(model=model.eval(), spatial=spatial, temporal=bool(config["temporal_upsample"]),
                              channels=int(config["in_channels"]), source=name)


def upsampler_from_state(state: dict[str, Any], name: str, dtype: Any = None,
                         metadata: dict[str, str] | None = None) -> LatentUpscaleModel:
    """An upsampler from its tensors (``state`` is emptied), weights cast straight to ``dtype`` (float32 if None)."""
    import torch

    from ..flow.loading import fill

    config = config_from_shapes({k: tuple(v.shape) for k, v in state.items()}, name, metadata)
    model = build_empty(config)  # buffers (the resampler's fixed blur kernel) are built, files may omit them
    fill(model, state, dtype or torch.float32, name)
    return _describe(model, config, name)


def refuse_other(shapes: Any, name: str) -> None:
    """Raise naming the fix when tensor names are a model LatentUpscaleModelLoader reads but nodegraph does not."""
    if any(k in shapes for k in HUNYUAN_SR_MARKS):
        raise UnknownModelError(f"LatentUpscaleModelLoader: {name} is a HunyuanVideo 1.5 super-resolution model, "
                                "which nodegraph does not run (HunyuanVideo 1.5 is not supported); use an LTX-Video "
                                "or LTX-2 latent upsampler (ltxv-spatial-upscaler-*, ltx-2-spatial-upscaler-*)")


def load_latent_upscale_model(path: Path, allow_pickle: bool = False, name: str | None = None,
                              dtype: Any = None) -> LatentUpscaleModel:
    """Load an LTX latent upsampler file (safetensors only) from ``models/latent_upscale_models``."""
    from safetensors.torch import load_file

    from ..detect import read_header

    path = Path(path)
    name = name or path.name
    if path.suffix.lower() != ".safetensors":
        raise UnknownModelError(f"LatentUpscaleModelLoader: {name} is not a .safetensors file; latent upsamplers "
                                "load from safetensors only (convert it, or download the .safetensors release)")
    header = read_header(path)
    refuse_other(header.shapes, name)
    config_from_shapes(header.shapes, name, header.metadata)  # refuse before reading the tensors
    return upsampler_from_state(load_file(str(path)), name, dtype, header.metadata)


def upscale_dtype(device: Any) -> Any:
    """ComfyUI's dtype for latent upsamplers: bfloat16 on an accelerator that has it, else float32."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def vae_statistics(vae: Any) -> tuple[Any, Any]:
    """The per-channel mean and std ``[C]`` of an LTX-Video/LTX-2 VAE (the ``vae`` of a loaded VAEModel)."""
    inner = getattr(vae, "inner", None)
    mean, std = getattr(inner, "latents_mean", None), getattr(inner, "latents_std", None)
    if mean is None or std is None:
        raise ValueError("LTXVLatentUpsampler: vae is not an LTX-Video or LTX-2 VAE (it has no per-channel latent "
                         "statistics); connect the VAE of the LTX checkpoint the latent was sampled with")
    return mean, std


def upsample_latent(upscaler: LatentUpscaleModel, vae: Any, samples: Any) -> Any:
    """Upsample normalised LTX latents ``[B, C, T, h, w]``: un-normalise, run the model, normalise (model's device
    and dtype; the result in the input's dtype on the CPU)."""
    import torch

    if samples.dim() != 5 or samples.shape[1] != upscaler.channels:
        raise ValueError(f"LTXVLatentUpsampler: samples is {tuple(samples.shape)}, not an LTX video latent "
                         f"[B, {upscaler.channels}, T, h, w]; connect the LATENT of an LTX sampler (for LTX-2, "
                         "split the audio off with LTXVSeparateAVLatent first)")
    mean, std = vae_statistics(vae)
    if mean.numel() != upscaler.channels:
        raise ValueError(f"LTXVLatentUpsampler: the VAE has {mean.numel()} latent channels but the upscale model "
                         f"{upscaler.channels}; connect the VAE of the same LTX family")
    param = next(upscaler.model.parameters())
    shape = (1, -1, 1, 1, 1)
    x = samples.to(param.device, param.dtype)
    mean, std = mean.view(shape).to(x), std.view(shape).to(x)
    with torch.no_grad():
        out = upscaler.model(x * std + mean)
        out = (out - mean) / std
    return out.to(device="cpu", dtype=samples.dtype)


def parameter_counts() -> dict[str, int]:
    """Parameters of each shipped config, counted on the meta device."""
    return {name: sum(p.numel() for p in build_empty(shipped_config(name)).parameters()) for name in CONFIG_NAMES}


__all__ = ["CONFIG_NAMES", "LatentUpscaleModel", "build_empty", "config_from_shapes", "is_ltx_upsampler",
           "load_latent_upscale_model", "parameter_counts", "refuse_other", "shipped_config", "upsample_latent",
           "upsampler_from_state", "upscale_dtype", "vae_statistics"]
