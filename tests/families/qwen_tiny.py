"""A tiny random-weight Qwen-Image (transformer, Qwen2.5-VL text encoder + tokenizer, Wan-style VAE), saved as
ComfyUI expects, under the file names of ComfyUI's qwen_image example: ``diffusion_models/`` in ComfyUI's layout
(``model.diffusion_model.`` + diffusers names) and diffusers' (root), ``text_encoders/qwen_2.5_vl_7b_fp8_scaled``
(ComfyUI's/transformers 4 names) + ``qwen_tokenizer/``, ``vae/qwen_image_vae`` (Wan's original names). ``QwenImagePipeline`` over the same modules is the oracle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter

TRANSFORMER = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32,
                   num_attention_heads=2, joint_attention_dim=64, axes_dims_rope=[4, 14, 14])
TEXT = dict(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_scaling={"type": "mrope",
                                                                               "mrope_section": [4, 6, 6]})
VISION = dict(depth=1, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
              fullatt_block_indexes=[0])
VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
LAYOUTS = {"comfyui": "qwen_image_fp8_e4m3fn.safetensors", "diffusers": "qwen_image_tiny_diffusers.safetensors"}
TEXT_ENCODER, VAE_FILE = "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"
CORPUS = ("Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships "
          "of the objects and background system user assistant a photo of the red cat on sky green blue tree")


@dataclass
class TinyQwen:
    """The tiny modules and where their files are."""

    transformer: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    home: Path

    def edit_pipeline(self) -> Any:
        """QwenImageEditPipeline over the same modules, with ``VLProcessor`` standing in for Qwen2VLProcessor."""
        from diffusers import QwenImageEditPipeline

        base = self.pipeline()
        return QwenImageEditPipeline(scheduler=base.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                     tokenizer=self.tokenizer, processor=VLProcessor(self.tokenizer),
                                     transformer=self.transformer)

    def edit_plus_pipeline(self) -> Any:
        """QwenImageEditPlusPipeline (Qwen-Image-Edit-2509) over the same modules."""
        from diffusers import QwenImageEditPlusPipeline

        edit = self.edit_pipeline()
        return QwenImageEditPlusPipeline(scheduler=edit.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                         tokenizer=self.tokenizer, processor=edit.processor,
                                         transformer=self.transformer)

    def pipeline(self) -> Any:
        """QwenImagePipeline over the same modules, with a plain (unshifted) scheduler: sigmas are passed in."""
        from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        return QwenImagePipeline(scheduler=scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                 tokenizer=self.tokenizer, transformer=self.transformer)


class VLProcessor:
    """What ``Qwen2VLProcessor(text=, images=)`` returns (its documented expansion: each ``<|image_pad|>`` becomes
    grid_t·grid_h·grid_w / merge² pads), built here because transformers' class needs torchvision for videos."""

    def __init__(self, tokenizer: Any) -> None:
        from nodegraph.diffusion.qwen.text import image_processor

        self.tokenizer, self.image_processor = tokenizer, image_processor()

    def __call__(self, text: list[str], images: Any = None, padding: bool = True, return_tensors: str = "pt") -> Any:
        import numpy as np
        from transformers import BatchFeature

        images = images if isinstance(images, list) else [images]
        vision = self.image_processor(images=[np.asarray(i) for i in images], return_tensors="pt")
        counts = iter(int(g.prod()) // self.image_processor.merge_size ** 2 for g in vision["image_grid_thw"])
        expanded = []
        for t in text:
            parts = t.split("<|image_pad|>")
            expanded.append(parts[0] + "".join("<|image_pad|>" * next(counts) + p for p in parts[1:]))
        enc = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors)
        return BatchFeature({**enc, **vision})


def tokenizer(folder: Path) -> Any:
    """A tiny byte-level BPE with Qwen2's special tokens, saved as vocab.json + merges.txt in ``folder``."""
    from family_kit import byte_level_bpe
    from transformers import Qwen2TokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
    tok = byte_level_bpe(CORPUS, specials)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                              pad_token="<|endoftext|>", additional_special_tokens=specials[3:])
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


def to_wan_original(state: dict[str, Any]) -> dict[str, Any]:
    """Wan's original VAE names for a diffusers ``AutoencoderKLQwenImage`` state (the inverse of diffusers'
    ``convert_wan_vae_to_diffusers`` for the shipped block layout)."""
    fixed = {"quant_conv": "conv1", "post_quant_conv": "conv2", "encoder.conv_in": "encoder.conv1",
             "decoder.conv_in": "decoder.conv1", "encoder.norm_out": "encoder.head.0",
             "encoder.conv_out": "encoder.head.2", "decoder.norm_out": "decoder.head.0",
             "decoder.conv_out": "decoder.head.2", "encoder.mid_block.attentions.0": "encoder.middle.1",
             "decoder.mid_block.attentions.0": "decoder.middle.1"}
    res = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
           "conv_shortcut": "shortcut"}
    out = {}
    for key, value in state.items():
        new = key
        for a, b in fixed.items():
            if key.startswith(a + "."):
                new = b + key[len(a):]
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+)\.(.*)", key)
        if m:
            new = f"{m[1]}.middle.{2 * int(m[2])}.{res[m[3]]}.{m[4]}"
        m = re.match(r"encoder\.down_blocks\.(\d+)\.(\w+)\.(.*)", key)
        if m:
            new = f"encoder.downsamples.{m[1]}.{res.get(m[2], m[2])}.{m[3]}"
        m = re.match(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(\w+)\.(.*)", key)
        if m:
            new = f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{res[m[3]]}.{m[4]}"
        m = re.match(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.(.*)", key)
        if m:
            new = f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        out[new] = value.contiguous()
    return out


def build(home: Path, seed: int = 0) -> TinyQwen:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from safetensors.torch import save_file
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so every weight matters
    models = home / "models"
    tok = tokenizer(models / "text_encoders" / "qwen_tokenizer")
    ids = {key: tok.convert_tokens_to_ids(t) for key, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2_5_VLConfig(text_config=TEXT, vision_config=VISION, bos_token_id=None, eos_token_id=None,
                              pad_token_id=None, **ids)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config).eval()
    vae = AutoencoderKLQwenImage(**VAE).eval()
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()},
              str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    te = {}
    for k, v in text_encoder.state_dict().items():  # ComfyUI's names: model.layers.*, visual.*
        te[k.replace("model.language_model.", "model.").replace("model.visual.", "visual.")] = v.contiguous()
    save_file(te, str(models / "text_encoders" / TEXT_ENCODER))
    save_file(to_wan_original(vae.state_dict()), str(models / "vae" / VAE_FILE))
    return TinyQwen(transformer, text_encoder, tok, vae, home)
