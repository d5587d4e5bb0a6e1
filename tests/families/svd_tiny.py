"""A tiny random-weight Stable Video Diffusion (spatio-temporal UNet, temporal-decoder VAE, CLIP vision tower with a
224-px input as the pipeline resizes to), saved as one single file in Stability's/ComfyUI's layout under the example
graphs' names (``checkpoints/svd.safetensors``, ``checkpoints/svd_xt.safetensors``), with a 224×224 start image in
``input/``. ``StableVideoDiffusionPipeline`` over the same modules is the numerical oracle.

The names are written out here by hand (diffusers → SGM), independently of the loader's converter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FRAMES, SIZE = 3, 224
UNET = {"block_out_channels": (32, 64), "layers_per_block": 1, "num_attention_heads": (1, 1),
        "cross_attention_dim": 32, "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24, "num_frames": FRAMES, "sample_size": 28}
VAE = {"block_out_channels": (32, 32, 32, 32), "down_block_types": ("DownEncoderBlock2D",) * 4, "layers_per_block": 1,
       "latent_channels": 4, "sample_size": SIZE}
#: heads = width / 64 (at least 1) and gelu, as ComfyUI reads OpenCLIP ViT-H towers
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
          "image_size": SIZE, "patch_size": 32, "projection_dim": 32, "hidden_act": "gelu"}
FILES = ("svd.safetensors", "svd_xt.safetensors")
IMAGE = "init.png"

_RES = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
        ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_OC_FIXED = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
             "embeddings.position_embedding.weight": "positional_embedding", "pre_layrnorm.weight": "ln_pre.weight",
             "pre_layrnorm.bias": "ln_pre.bias", "post_layernorm.weight": "ln_post.weight",
             "post_layernorm.bias": "ln_post.bias"}
_OC_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}


@dataclass
class TinySVD:
    """The tiny modules and where their files are."""

    unet: Any
    vae: Any
    image_encoder: Any
    home: Path

    def pipeline(self) -> Any:
        """StableVideoDiffusionPipeline over the same modules, with SVD's scheduler (EDM v-prediction, Karras
        sigmas from 700 to 0.002, continuous timesteps)."""
        from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
        from transformers import CLIPImageProcessor

        scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True, sigma_min=0.002,
                                           sigma_max=700.0, timestep_type="continuous", interpolation_type="linear",
                                           timestep_spacing="leading", steps_offset=1, beta_schedule="scaled_linear",
                                           beta_start=0.00085, beta_end=0.012)
        return StableVideoDiffusionPipeline(vae=self.vae, image_encoder=self.image_encoder, unet=self.unet,
                                            scheduler=scheduler, feature_extractor=CLIPImageProcessor())


def _perturb(module: Any, seed: int) -> Any:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def _resnet(rest: str) -> str:
    if rest.startswith("time_mixer."):
        return rest
    side, _, tail = rest.partition(".")
    for a, b in _RES:
        tail = tail.replace(a, b)
    return tail if side == "spatial_res_block" else "time_stack." + tail


def unet_to_sgm(state: dict[str, Any], levels: int, per_level: int, attends: list[bool]) -> dict[str, Any]:
    """``model.diffusion_model.*`` names for a diffusers UNetSpatioTemporalConditionModel state dict."""
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if module in fixed:
            new = f"{fixed[module]}.{param}"
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", key):
            index = 1 + int(m[1]) * (per_level + 1) + int(m[3])
            new = (f"input_blocks.{index}.0.{_resnet(m[4])}" if m[2] == "resnets"
                   else f"input_blocks.{index}.1.{_attention(m[4])}")
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", key):
            new = f"input_blocks.{1 + int(m[1]) * (per_level + 1) + per_level}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", key):
            new = (f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}" if m[1] == "resnets"
                   else f"middle_block.1.{_attention(m[3])}")
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$", key):
            index = int(m[1]) * (per_level + 1) + int(m[3])
            new = (f"output_blocks.{index}.0.{_resnet(m[4])}" if m[2] == "resnets"
                   else f"output_blocks.{index}.1.{_attention(m[4])}")
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", key):
            block = int(m[1])
            slot = 2 if attends[levels - 1 - block] else 1
            new = f"output_blocks.{block * (per_level + 1) + per_level}.{slot}.conv.{m[2]}"
        else:
            raise KeyError(key)
        out["model.diffusion_model." + new] = value
    return out


def _attention(rest: str) -> str:
    rest = re.sub(r"^temporal_transformer_blocks\.", "time_stack.", rest)
    return rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace("time_pos_embed.linear_2.",
                                                                                  "time_pos_embed.2.")


def _vae_resnet(rest: str, video: bool) -> str:
    if not video:
        return rest.replace("conv_shortcut", "nin_shortcut")
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    side, _, tail = rest.partition(".")
    if side == "spatial_res_block":
        return tail.replace("conv_shortcut", "nin_shortcut")
    for a, b in _RES:
        tail = tail.replace(a, b)
    return "time_stack." + tail


def vae_to_sgm(state: dict[str, Any], levels: int) -> dict[str, Any]:
    """``first_stage_model.*`` names for a diffusers AutoencoderKLTemporalDecoder (no quant_conv, as ComfyUI's)."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        side, _, rest = key.partition(".")
        if side == "quant_conv":
            continue
        if rest.startswith("conv_norm_out."):
            new = "norm_out." + rest.split(".", 1)[1]
        elif rest.startswith("time_conv_out."):
            new = "conv_out.time_mix_conv." + rest.split(".", 1)[1]
        elif m := re.match(r"mid_block\.resnets\.(\d)\.(.*)$", rest):
            new = f"mid.block_{int(m[1]) + 1}.{_vae_resnet(m[2], side == 'decoder')}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)\.(weight|bias)$", rest):
            new = f"mid.attn_1.{attn[m[1]]}.{m[2]}"
            if m[2] == "weight" and value.dim() == 2:
                value = value[:, :, None, None]
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest):
            new = f"down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3], False)}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$", rest):
            new = f"down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", rest):
            new = f"up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3], True)}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", rest):
            new = f"up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        else:
            new = rest
        out[f"first_stage_model.{side}.{new}"] = value
    return out


def vision_to_open_clip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """OpenCLIP names (q/k/v fused) under ``prefix`` for a transformers CLIPVisionModelWithProjection."""
    out, qkv = {}, {}
    for key, value in state.items():
        if key == "visual_projection.weight":
            out[prefix + "proj"] = value.t().contiguous()
            continue
        rest = key.removeprefix("vision_model.")
        if rest in _OC_FIXED:
            out[prefix + _OC_FIXED[rest]] = value
            continue
        _, _, index, tail = rest.split(".", 3)
        module, param = tail.rsplit(".", 1)
        if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault((index, param), {})[module[-6]] = value
        else:
            out[f"{prefix}transformer.resblocks.{index}.{_OC_LAYER[module]}.{param}"] = value
    for (index, param), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{index}.attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]]).contiguous()
    return out


def single_file(unet: Any, vae: Any, vision: Any) -> dict[str, Any]:
    """The three models' tensors in one state dict, Stability's/ComfyUI's names."""
    cfg = unet.config
    attends = [t.startswith("CrossAttn") for t in cfg.down_block_types]
    state = unet_to_sgm(unet.state_dict(), len(cfg.block_out_channels), cfg.layers_per_block, attends)
    state.update(vae_to_sgm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update(vision_to_open_clip(vision.state_dict(), "conditioner.embedders.0.open_clip.model.visual."))
    return {k: v.contiguous() for k, v in state.items()}


def start_image() -> Any:
    """The 224×224 start image (a smooth gradient with seeded noise), as a PIL image."""
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(3)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 200 + gen.integers(0, 55, (SIZE, SIZE, 3))
    return Image.fromarray(rgb.astype(np.uint8))


def build(home: Path) -> TinySVD:
    """Build the tiny models and write their single files and the start image under ``home``."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from nodegraph.config import EngineConfig

    torch.manual_seed(0)
    unet = _perturb(UNetSpatioTemporalConditionModel(**UNET), 1)
    vae = _perturb(AutoencoderKLTemporalDecoder(**VAE), 2)
    with torch.no_grad():  # ComfyUI's SVD VAE has no quant_conv: the identity
        vae.quant_conv.weight.copy_(torch.eye(8)[:, :, None, None])
        vae.quant_conv.bias.zero_()
    vision = _perturb(CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)), 3)
    cfg = EngineConfig(home=home)
    cfg.ensure_dirs()
    state = single_file(unet, vae, vision)
    for name in FILES:
        save_file(state, str(cfg.model_dir("checkpoints") / name))
    start_image().save(cfg.input_dir / IMAGE)
    start_image().save(cfg.input_dir / "mountains.png")
    return TinySVD(unet=unet, vae=vae, image_encoder=vision, home=home)
