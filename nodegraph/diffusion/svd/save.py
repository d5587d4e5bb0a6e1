"""ImageOnlyCheckpointSave: an SVD MODEL + CLIP_VISION + VAE (LoRA/merge patches applied) as one ``.safetensors``
file in the layout ComfyUI writes and ``files.load_svd_checkpoint`` (and ComfyUI) read back.

Layout: the UNet under ``model.diffusion_model.`` and the VAE under ``first_stage_model.`` in SGM's names (the inverse
of ``files.convert_unet``/``convert_vae``; the VAE without ``quant_conv``, as ComfyUI's), the CLIP vision tower in
transformers' names under ``conditioner.embedders.0.open_clip.model.visual.`` (ComfyUI saves it so), and ComfyUI's
empty ``v_pred`` marker. Metadata: ``prompt`` and the ``extra_pnginfo`` entries, as ComfyUI's CheckpointSave.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .files import UNET_PREFIX, VAE_PREFIX, VISION_PREFIX

_RES = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"), ("conv2", "out_layers.3"))
_UNET_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
               "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _layers(tail: str) -> str:
    for new, old in _RES:
        tail = tail.replace(new, old)
    return tail


def _resnet(rest: str, shortcut: str) -> str:
    """A SpatioTemporalResBlock tensor (after ``resnets.N.``) in SGM's VideoResBlock names."""
    if rest.startswith("time_mixer."):
        return rest if shortcut == "skip_connection" else "mix_factor"  # the VAE's blocks hold it directly
    side, _, tail = rest.partition(".")
    if side == "temporal_res_block":
        return "time_stack." + _layers(tail)
    tail = tail.replace("conv_shortcut", shortcut)
    return _layers(tail) if shortcut == "skip_connection" else tail


def _attention(rest: str) -> str:
    rest = re.sub(r"^temporal_transformer_blocks\.", "time_stack.", rest)
    return re.sub(r"^time_pos_embed\.linear_([12])\.", lambda m: f"time_pos_embed.{2 * (int(m[1]) - 1)}.", rest)


def unet_to_sgm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """SGM names (``model.diffusion_model.*``) for a UNetSpatioTemporalConditionModel state dict."""
    per, levels = int(config.layers_per_block), len(config.block_out_channels)
    attends = [t.startswith("CrossAttn") for t in config.down_block_types]
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if module in _UNET_FIXED:
            new = f"{_UNET_FIXED[module]}.{param}"
        elif m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", key):
            index = (1 + int(m[2]) * (per + 1) if m[1] == "down" else int(m[2]) * (per + 1)) + int(m[4])
            where = "input_blocks" if m[1] == "down" else "output_blocks"
            new = (f"{where}.{index}.0.{_resnet(m[5], 'skip_connection')}" if m[3] == "resnets"
                   else f"{where}.{index}.1.{_attention(m[5])}")
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", key):
            new = f"input_blocks.{1 + int(m[1]) * (per + 1) + per}.0.op.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", key):
            slot = 2 if attends[levels - 1 - int(m[1])] else 1
            new = f"output_blocks.{int(m[1]) * (per + 1) + per}.{slot}.conv.{m[2]}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key):
            new = (f"middle_block.{2 * int(m[2])}.{_resnet(m[3], 'skip_connection')}" if m[1] == "resnets"
                   else f"middle_block.1.{_attention(m[3])}")
        else:
            raise ValueError(f"ImageOnlyCheckpointSave: unexpected SVD UNet tensor {key!r}")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_sgm(state: dict[str, Any], levels: int) -> dict[str, Any]:
    """SGM names (``first_stage_model.*``) for an AutoencoderKLTemporalDecoder state dict (no quant_conv)."""
    out = {}
    for key, value in state.items():
        side, _, rest = key.partition(".")
        if side == "quant_conv":
            continue
        shortcut = "nin_shortcut"
        if rest.startswith("conv_norm_out."):
            new = "norm_out." + rest.split(".", 1)[1]
        elif rest.startswith("time_conv_out."):
            new = "conv_out.time_mix_conv." + rest.split(".", 1)[1]
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(.*)$", rest):
            new = f"mid.block_{int(m[1]) + 1}.{_vae_resnet(m[2], side, shortcut)}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)$", rest):
            new = f"mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
            if m[2] == "weight" and value.dim() == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest):
            new = f"down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', shortcut)}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", rest):
            new = f"down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest):
            new = f"up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3], side, shortcut)}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", rest):
            new = f"up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        else:
            new = rest
        out[f"{VAE_PREFIX}{side}.{new}"] = value
    return out


def _vae_resnet(rest: str, side: str, shortcut: str) -> str:
    return _resnet(rest, shortcut) if side == "decoder" else rest.replace("conv_shortcut", shortcut)


def checkpoint_state(model: Any, vision: Any, vae: Any, library: Any = None) -> dict[str, Any]:
    """The three models' weights (the MODEL's patches applied) in ComfyUI's SVD layout, as CPU copies."""
    import torch

    from ..lora import applied

    def cpu(state: dict[str, Any]) -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}

    with torch.no_grad():
        with applied(model, library):
            state = unet_to_sgm(cpu(model.unet.state_dict()), model.unet.config)
        inner = vae.vae.inner
        state.update(vae_to_sgm(cpu(inner.state_dict()), len(inner.config.block_out_channels)))
        state.update({VISION_PREFIX + k: v for k, v in cpu(vision.model.state_dict()).items()
                      if not k.endswith("position_ids")})
    state["v_pred"] = torch.tensor([])
    return state


def save_svd_checkpoint(ctx: Any, model: Any, clip_vision: Any, vae: Any, filename_prefix: str) -> dict[str, str]:
    """Write ``{prefix}_{counter:05}_.safetensors`` into the output folder (never outside it); returns its
    ``{"filename", "subfolder", "type"}`` entry."""
    from safetensors.torch import save_file

    with ctx.models.use(model, clip_vision, vae) as (m, cv, v):
        if getattr(m, "family", "") != "svd" or not hasattr(v.vae, "inner"):
            raise ValueError("ImageOnlyCheckpointSave: model and vae must come from an SVD checkpoint "
                             "(ImageOnlyCheckpointLoader); use CheckpointSave for image models")
        library = ctx.models.lora_library() if m.loras else None
        state = checkpoint_state(m, cv, v, library)
        handle, entry = ctx.files.create(filename_prefix, ".safetensors", "output")
        handle.close()
    metadata = {"modelspec.predict_key": "v", "prompt": "" if ctx.prompt is None else json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_pnginfo or {}).items():
        metadata[str(key)] = json.dumps(value)
    path = ctx.files.path("output", "/".join(p for p in (entry["subfolder"], entry["filename"]) if p))
    save_file(state, str(path), metadata=metadata)
    return entry


__all__ = ["checkpoint_state", "save_svd_checkpoint", "unet_to_sgm", "vae_to_sgm"]
