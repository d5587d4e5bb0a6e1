"""Stable Video Diffusion single files (``svd.safetensors``, ``svd_xt.safetensors``): detection, conversion from
Stability's/ComfyUI's tensor names to diffusers' and loading of the three models they hold.

- UNet ``model.diffusion_model.*`` (SGM's VideoUNet) → ``UNetSpatioTemporalConditionModel``: diffusers'
  ``convert_ldm_unet_checkpoint`` maps the block structure (it is SD's), then the video parts are renamed: a
  ResBlock's own layers go under ``spatial_res_block``, its ``time_stack`` under ``temporal_res_block``; a
  transformer's ``time_stack.N`` becomes ``temporal_transformer_blocks.N`` and ``time_pos_embed.0/2`` its
  ``linear_1/2``. ``label_emb`` (fps, motion bucket, augmentation embeddings) is diffusers' ``add_embedding``.
- VAE ``first_stage_model.*`` → ``AutoencoderKLTemporalDecoder``: SD's encoder, and a decoder whose ResBlocks carry a
  ``time_stack`` and ``mix_factor`` and whose output convolution a ``time_mix_conv``. The file has no
  ``quant_conv`` (ComfyUI's AutoencodingEngine has none): diffusers' is then the identity.
- CLIP vision ``conditioner.embedders.0.open_clip.model.visual.*`` (OpenCLIP ViT-H/14) → transformers'
  ``CLIPVisionModelWithProjection`` (``vision.from_open_clip``).
Configs come from the tensor shapes (the released files give ``configs/svd``'s); attention heads are width / 64, as
ComfyUI's ``num_head_channels`` 64.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..detect import CONFIGS_DIR, UnknownModelError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
VISION_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
#: A tensor only SVD's VideoUNet has (a temporal ResBlock in the first input block).
MARKER = UNET_PREFIX + "input_blocks.1.0.time_stack.in_layers.0.weight"
CONFIG_DIR = CONFIGS_DIR / "svd"
_RES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"), ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"), ("nin_shortcut", "conv_shortcut"))
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def shipped_config(name: str) -> dict[str, Any]:
    """A shipped config of ``configs/svd`` (``unet`` or ``vae``) without diffusers' bookkeeping keys."""
    data = json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def is_svd_checkpoint(keys: Any) -> bool:
    """Whether tensor names are an SVD single file's (Stability's/ComfyUI's layout)."""
    return MARKER in set(keys)


def _under(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _resnet_part(rest: str) -> str:
    """A video ResBlock's tensor (after ``resnets.N.``) in diffusers' SpatioTemporalResBlock."""
    if rest.startswith("time_stack."):
        rest = rest[len("time_stack."):]
        for old, new in _RES:
            rest = rest.replace(old, new)
        return "temporal_res_block." + rest
    if rest.startswith("time_mixer.") or rest == "mix_factor":
        return "time_mixer.mix_factor"
    for old, new in _RES:
        rest = rest.replace(old, new)
    return "spatial_res_block." + rest


def _attention_part(rest: str) -> str:
    """A video transformer's tensor (after ``attentions.N.``) in diffusers' TransformerSpatioTemporalModel."""
    rest = re.sub(r"^time_stack\.", "temporal_transformer_blocks.", rest)
    return re.sub(r"^time_pos_embed\.([02])\.", lambda m: f"time_pos_embed.linear_{int(m.group(1)) // 2 + 1}.",
                  rest)


def convert_unet(state: dict[str, Any]) -> dict[str, Any]:
    """diffusers names for a VideoUNet's tensors (``model.diffusion_model.*`` of ``state``)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    tensors = {UNET_PREFIX + k: v for k, v in _under(state, UNET_PREFIX).items()}
    blocks = {int(k.split(".")[1]) for k in _under(tensors, UNET_PREFIX) if k.startswith("input_blocks.")}
    levels = {i for i in blocks if f"{UNET_PREFIX}input_blocks.{i}.0.op.weight" in tensors}
    per_level = (min(levels) - 1) if levels else max(blocks)
    converted = convert_ldm_unet_checkpoint(tensors, {"layers_per_block": per_level,
                                                      "addition_embed_type": "text_time"})
    out: dict[str, Any] = {}
    for key, value in converted.items():
        match = re.match(r"^(.*\.(resnets|attentions)\.\d+\.)(.*)$", key)
        if match is None:
            out[key] = value
        elif match.group(2) == "resnets":
            out[match.group(1) + _resnet_part(match.group(3))] = value
        else:
            out[match.group(1) + _attention_part(match.group(3))] = value
    return out


def _vae_resnet(rest: str) -> str:
    return _resnet_part(rest)


def convert_vae(state: dict[str, Any]) -> dict[str, Any]:
    """diffusers names for an SVD VAE's tensors (``first_stage_model.*`` of ``state``; identity ``quant_conv``
    when the file has none)."""
    import torch

    tensors = _under(state, VAE_PREFIX)
    ups = len({k.split(".")[2] for k in tensors if k.startswith("decoder.up.")})
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        side, _, rest = key.partition(".")
        if side == "quant_conv":
            out[key] = value
        if side not in ("encoder", "decoder"):  # quant_conv (kept above), training-only extras
            continue
        new = _vae_key(side, rest, ups)
        if new is None:
            raise UnknownModelError(f"unexpected SVD VAE tensor {VAE_PREFIX}{key}; the file is not an SVD checkpoint "
                                    "this engine knows")
        if ".attentions." in new and value.dim() > 2:
            value = value.reshape(value.shape[0], -1) if new.endswith("weight") else value
        out[new] = value
    if "quant_conv.weight" not in out and "encoder.conv_out.weight" in out:
        width = int(out["encoder.conv_out.weight"].shape[0])
        out["quant_conv.weight"] = torch.eye(width, dtype=out["encoder.conv_out.weight"].dtype)[:, :, None, None]
        out["quant_conv.bias"] = torch.zeros(width, dtype=out["encoder.conv_out.weight"].dtype)
    return out


def _vae_key(side: str, rest: str, ups: int) -> str | None:
    """One encoder/decoder tensor name in diffusers' layout (None when unknown)."""
    fixed = {"conv_in.weight", "conv_in.bias", "conv_out.weight", "conv_out.bias"}
    if rest in fixed:
        return f"{side}.{rest}"
    if rest.startswith("norm_out."):
        return f"{side}.conv_norm_out.{rest[len('norm_out.'):]}"
    if rest.startswith("conv_out.time_mix_conv."):
        return f"{side}.time_conv_out.{rest[len('conv_out.time_mix_conv.'):]}"
    m = re.match(r"^mid\.block_([12])\.(.*)$", rest)
    if m:
        inner = _vae_resnet(m.group(2)) if side == "decoder" else _plain_resnet(m.group(2))
        return f"{side}.mid_block.resnets.{int(m.group(1)) - 1}.{inner}"
    m = re.match(r"^mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$", rest)
    if m:
        return f"{side}.mid_block.attentions.0.{_VAE_ATTN[m.group(1)]}.{m.group(2)}"
    m = re.match(r"^down\.(\d+)\.block\.(\d+)\.(.*)$", rest)
    if m and side == "encoder":
        return f"encoder.down_blocks.{m.group(1)}.resnets.{m.group(2)}.{_plain_resnet(m.group(3))}"
    m = re.match(r"^down\.(\d+)\.downsample\.conv\.(weight|bias)$", rest)
    if m and side == "encoder":
        return f"encoder.down_blocks.{m.group(1)}.downsamplers.0.conv.{m.group(2)}"
    m = re.match(r"^up\.(\d+)\.block\.(\d+)\.(.*)$", rest)
    if m and side == "decoder":
        return f"decoder.up_blocks.{ups - 1 - int(m.group(1))}.resnets.{m.group(2)}.{_vae_resnet(m.group(3))}"
    m = re.match(r"^up\.(\d+)\.upsample\.conv\.(weight|bias)$", rest)
    if m and side == "decoder":
        return f"decoder.up_blocks.{ups - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
    return None


def _plain_resnet(rest: str) -> str:
    return rest.replace("nin_shortcut", "conv_shortcut")


def _count(state: dict[str, Any], prefix: str) -> int:
    return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})


def unet_config(state: dict[str, Any]) -> dict[str, Any]:
    """``UNetSpatioTemporalConditionModel`` config from diffusers-named tensors (``configs/svd/unet.json`` for the
    released files)."""
    levels = _count(state, "down_blocks.")
    widths = [int(state[f"down_blocks.{i}.resnets.0.spatial_res_block.conv1.weight"].shape[0]) for i in range(levels)]
    attends = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in state) for i in range(levels)]
    first = next((k for k in state if k.endswith("transformer_blocks.0.attn2.to_k.weight")), None)
    added = int(state["add_embedding.linear_1.weight"].shape[1])
    config = shipped_config("unet")
    config.update(
        in_channels=int(state["conv_in.weight"].shape[1]), out_channels=int(state["conv_out.weight"].shape[0]),
        block_out_channels=widths, layers_per_block=_count(state, "down_blocks.0.resnets."),
        down_block_types=["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attends],
        up_block_types=["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attends[::-1]],
        cross_attention_dim=int(state[first].shape[1]) if first else config["cross_attention_dim"],
        addition_time_embed_dim=added // 3, projection_class_embeddings_input_dim=added,
        num_attention_heads=[max(1, w // 64) for w in widths],
        transformer_layers_per_block=max(1, _count(state, "down_blocks.0.attentions.0.transformer_blocks.")))
    return config


def vae_config(state: dict[str, Any]) -> dict[str, Any]:
    """``AutoencoderKLTemporalDecoder`` config from diffusers-named tensors."""
    levels = _count(state, "encoder.down_blocks.")
    config = shipped_config("vae")
    config.update(
        block_out_channels=[int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0])
                            for i in range(levels)],
        down_block_types=["DownEncoderBlock2D"] * levels,
        layers_per_block=_count(state, "encoder.down_blocks.0.resnets."),
        latent_channels=int(state["decoder.conv_in.weight"].shape[1]))
    return config


def vision_tensors(state: dict[str, Any]) -> dict[str, Any]:
    """transformers-named CLIP vision tensors under ``VISION_PREFIX``: OpenCLIP's names (Stability's files) or
    transformers' (what ComfyUI's ImageOnlyCheckpointSave writes there)."""
    from ..vision import from_open_clip

    if f"{VISION_PREFIX}transformer.resblocks.0.attn.in_proj_weight" in state:
        return from_open_clip(state, VISION_PREFIX)
    return {k[len(VISION_PREFIX):]: v for k, v in state.items()
            if k.startswith(VISION_PREFIX + "vision_model.") or k == VISION_PREFIX + "visual_projection.weight"}


@dataclass(frozen=True, eq=False)
class SVDCheckpoint:
    """What ImageOnlyCheckpointLoader reads: the MODEL, the CLIP_VISION and the VAE of one file."""

    model: Any
    clip_vision: Any
    vae: Any

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return sum(int(getattr(p, "nbytes", 0)) for p in (self.model, self.clip_vision, self.vae))


def parts(handle: Any) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP_VISION, VAE) handles onto one loaded ``SVDCheckpoint`` handle."""
    import dataclasses

    return tuple(dataclasses.replace(handle, part=p) for p in ("model", "clip_vision", "vae"))  # type: ignore


def _build(factory: Any, config: dict[str, Any], state: dict[str, Any], dtype: Any, what: str) -> Any:
    from accelerate import init_empty_weights

    from ..flow.loading import fill

    with init_empty_weights():
        model = factory.from_config(config)
    return fill(model, state, dtype, what)


def load_svd_checkpoint(path: Path, config: Any = None, *, name: str | None = None,
                        dtype: Any = None) -> SVDCheckpoint:
    """Load an SVD/SVD-XT single file: the spatio-temporal UNet (MODEL, family ``svd``), the CLIP vision encoder and
    the temporal-decoder VAE (float32)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    from ..loading import load_state_dict, quiet_libraries
    from ..types import DiffusionModel, LatentFormat, VAEModel
    from ..vision import build as build_vision
    from .sampling import svd_model_fields
    from .vae import SVDVideoVAE

    path = Path(path)
    name = name or path.name
    allow = bool(config is not None and getattr(config, "allow_unsafe_pickle", False))
    state = load_state_dict(path, allow)
    if not is_svd_checkpoint(state):
        raise UnknownModelError(f"{name} is not a Stable Video Diffusion checkpoint (no {MARKER}); load image "
                                "checkpoints with CheckpointLoaderSimple, and svd.safetensors / svd_xt.safetensors "
                                "here")
    with quiet_libraries():
        unet_state = convert_unet(state)
        for key in [k for k in state if k.startswith(UNET_PREFIX)]:
            del state[key]  # the UNet's tensors now live in unet_state only
        unet = _build(UNetSpatioTemporalConditionModel, unet_config(unet_state), unet_state, dtype,
                      f"{name}: its UNet")
        vae_state = convert_vae(state)
        if "decoder.conv_in.weight" not in vae_state:
            raise UnknownModelError(f"{name} has an SVD UNet but no VAE ({VAE_PREFIX}*); the file is incomplete")
        inner = _build(AutoencoderKLTemporalDecoder, vae_config(vae_state), vae_state, None, f"{name}: its VAE")
        vision_state = vision_tensors(state)
        if not vision_state:
            raise UnknownModelError(f"{name} has an SVD UNet but no CLIP vision tower ({VISION_PREFIX}*); the file "
                                    "is incomplete")
        vision = build_vision(vision_state, name, dtype)
    vae = VAEModel(vae=SVDVideoVAE(inner), scaling_factor=float(inner.config.scaling_factor), source=name)
    model = DiffusionModel(unet=unet, arch="svd", source=name, latent=LatentFormat.from_vae(vae, fit_rgb=False),
                           **svd_model_fields())
    return SVDCheckpoint(model=model, clip_vision=vision, vae=vae)


def svd_checkpoint(path: Path, name: str, dtype: Any = None) -> Any:
    """``families.CHECKPOINT_FILES`` entry: CheckpointLoaderSimple on an SVD file gives its MODEL and VAE and an empty
    CLIP (the file has no text encoder, as ComfyUI's); None for a file that is not SVD's."""
    from ..detect import read_header
    from ..types import Checkpoint, TextEncoder

    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not is_svd_checkpoint(read_header(path).shapes):
        return None
    ckpt = load_svd_checkpoint(path, name=name, dtype=dtype)
    return Checkpoint(model=ckpt.model, clip=TextEncoder(tokenizers=(), encoders=(), arch="svd"), vae=ckpt.vae,
                      extras={"format": "single_file", "reasons": ["Stable Video Diffusion UNet + VAE"],
                              "clip_vision": ckpt.clip_vision})


__all__ = [
    "MARKER",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "VISION_PREFIX",
    "SVDCheckpoint",
    "convert_unet",
    "convert_vae",
    "is_svd_checkpoint",
    "load_svd_checkpoint",
    "parts",
    "shipped_config",
    "svd_checkpoint",
    "unet_config",
    "vae_config",
    "vision_tensors",
]
