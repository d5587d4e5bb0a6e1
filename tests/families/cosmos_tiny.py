"""A tiny random-weight Cosmos Predict2 text-to-image model (transformer, old-T5-style encoder + tokenizer, Wan 2.1
VAE), saved under the file names of ComfyUI's cosmos_predict2 example: ``diffusion_models/`` in NVIDIA's/ComfyUI's
names (``net.`` prefix) and diffusers' names, ``text_encoders/oldt5_xxl_fp8_e4m3fn_scaled.safetensors`` +
``t5_tokenizer/``, ``vae/wan_2.1_vae.safetensors`` (Wan's original names). ``Cosmos2TextToImagePipeline`` over the
same modules is the oracle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, jitter, model_folders

TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=32, num_layers=2,
                   mlp_ratio=2.0, text_embed_dim=32, adaln_lora_dim=8, max_size=(4, 32, 32), patch_size=(1, 2, 2),
                   rope_scale=(1.0, 4.0, 4.0), concat_padding_mask=True, extra_pos_embed_type=None)
T5 = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
          relative_attention_max_distance=128, feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False,
          tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
#: the video2world transformer: the condition mask as a 17th input channel, rope scales (1, 3, 3)
VIDEO_TRANSFORMER = dict(TRANSFORMER, in_channels=17, rope_scale=(1.0, 3.0, 3.0))
VIDEO_FILE = "cosmos_predict2_2B_video2world_480p_16fps.safetensors"
LAYOUTS = {"comfyui": "cosmos_predict2_2B_t2i.safetensors", "diffusers": "cosmos_predict2_tiny_diffusers.safetensors"}
TEXT_ENCODER, VAE_FILE = "oldt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"

#: diffusers name fragment → NVIDIA name fragment, applied in order (the inverse of diffusers' converter).
_TO_ORIGINAL = (("transformer_blocks.", "blocks."), ("norm1.linear_1", "adaln_modulation_self_attn.1"),
                ("norm1.linear_2", "adaln_modulation_self_attn.2"), ("norm2.linear_1", "adaln_modulation_cross_attn.1"),
                ("norm2.linear_2", "adaln_modulation_cross_attn.2"), ("norm3.linear_1", "adaln_modulation_mlp.1"),
                ("norm3.linear_2", "adaln_modulation_mlp.2"), ("attn1.", "self_attn."), ("attn2.", "cross_attn."),
                ("to_q.", "q_proj."), ("to_k.", "k_proj."), ("to_v.", "v_proj."), ("to_out.0.", "output_proj."),
                ("norm_q.", "q_norm."), ("norm_k.", "k_norm."), ("ff.net.0.proj", "mlp.layer1"),
                ("ff.net.2", "mlp.layer2"), ("patch_embed.proj", "x_embedder.proj.1"),
                ("time_embed.t_embedder", "t_embedder.1"), ("time_embed.norm", "t_embedding_norm"),
                ("norm_out.linear_1", "final_layer.adaln_modulation.1"),
                ("norm_out.linear_2", "final_layer.adaln_modulation.2"), ("proj_out", "final_layer.linear"))


@dataclass
class TinyCosmos:
    """The tiny modules and where their files are."""

    transformer: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    home: Path
    video_transformer: Any = None

    def pipeline(self) -> Any:
        """Cosmos2TextToImagePipeline over the same modules: Karras sigmas ending at 0 (ComfyUI's karras); a
        pass-through stands in for the guardrail model (prompts and outputs here are random tiny-model noise)."""
        from diffusers import (
            Cosmos2TextToImagePipeline,
            FlowMatchEulerDiscreteScheduler,
        )

        scheduler = FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True, shift=1.0, use_dynamic_shifting=False)
        pipe = Cosmos2TextToImagePipeline(text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                          transformer=self.transformer, vae=self.vae, scheduler=scheduler,
                                          safety_checker=PassThrough())
        pipe.scheduler.register_to_config(final_sigmas_type="zero")
        return pipe

    def video_pipeline(self) -> Any:
        """Cosmos2VideoToWorldPipeline over the same modules and the video2world transformer, set up like
        ``pipeline``."""
        from diffusers import Cosmos2VideoToWorldPipeline

        base = self.pipeline()
        pipe = Cosmos2VideoToWorldPipeline(text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                           transformer=self.video_transformer, vae=self.vae,
                                           scheduler=base.scheduler, safety_checker=PassThrough())
        pipe.scheduler.register_to_config(final_sigmas_type="zero")
        return pipe


class PassThrough(torch.nn.Module):
    """The guardrail's interface, passing everything (the tests compare latents, never show them)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))

    @property
    def device(self) -> Any:
        """Where the (empty) module lives, as diffusers asks of its components."""
        return self.anchor.device

    @property
    def dtype(self) -> Any:
        """The module's dtype, as diffusers asks of its components."""
        return self.anchor.dtype

    def check_text_safety(self, prompt: str) -> bool:
        """Every prompt passes."""
        return True

    def check_video_safety(self, video: Any) -> Any:
        """Every video passes unchanged."""
        return video


def decode(vae: Any, latents: Any) -> Any:
    """Frames [B·F, H, W, 3] in 0..1 of the Cosmos pipelines' normalised latents [B, 16, T, h, w], decoded as the
    pipelines do (latents × std + mean, the VAE, then x / 2 + 0.5)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        video = vae.decode(latents * std + mean, return_dict=False)[0]
    return (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).flatten(0, 1).float()


def to_original(state: dict[str, Any]) -> dict[str, Any]:
    """NVIDIA's names (``net.`` prefix) for a diffusers Cosmos Predict2 transformer state dict."""
    out = {}
    for key, value in state.items():
        new = key
        for a, b in _TO_ORIGINAL:
            new = new.replace(a, b)
        out["net." + new] = value.contiguous()
    return out


def build(home: Path, seed: int = 0) -> TinyCosmos:
    """Build the tiny modules with fixed seeds and save every file under ``home/models``."""
    from diffusers import AutoencoderKLWan, CosmosTransformer3DModel
    from flux_tiny import t5_tokenizer_files
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast
    from wan_tiny import VAE, vae_to_original

    torch.manual_seed(seed)
    transformer = CosmosTransformer3DModel(**TRANSFORMER).eval()
    jitter(transformer)  # random norms and modulation so every weight matters
    with torch.no_grad():
        for block in transformer.transformer_blocks:  # so the prompt visibly steers the tiny model
            block.attn2.to_v.weight.mul_(10.0)
    video = CosmosTransformer3DModel(**VIDEO_TRANSFORMER).eval()
    jitter(video)
    with torch.no_grad():
        for block in video.transformer_blocks:
            block.attn2.to_v.weight.mul_(10.0)
    text_encoder = T5EncoderModel(T5Config(**T5)).eval()
    vae = AutoencoderKLWan(**VAE).eval()
    models = model_folders(home, "diffusion_models", "text_encoders", "vae")
    t5_tokenizer_files(models / "text_encoders" / "t5_tokenizer")
    tokenizer = T5TokenizerFast.from_pretrained(str(models / "text_encoders" / "t5_tokenizer"))
    sd = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(sd, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(to_original(sd), str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file(to_original({k: v.contiguous() for k, v in video.state_dict().items()}),
              str(models / "diffusion_models" / VIDEO_FILE))
    te = {k: v.contiguous() for k, v in text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(te, str(models / "text_encoders" / TEXT_ENCODER))
    save_file(vae_to_original(cloned_state(vae)),
              str(models / "vae" / VAE_FILE))
    return TinyCosmos(transformer, text_encoder, tokenizer, vae, home, video)
