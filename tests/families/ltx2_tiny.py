"""A tiny random-weight LTX-2 (audio-video transformer, video VAE, audio VAE + vocoder, text connectors, Gemma-3 +
a tiny tokenizer), saved as ComfyUI expects.

Files under a nodegraph home: ``checkpoints/ltx2-tiny.safetensors`` (all-in-one, ComfyUI's/original names:
``model.diffusion_model.`` with the connectors, ``text_embedding_projection.``, ``vae.``, ``audio_vae.``,
``vocoder.``), ``checkpoints/ltx2-tiny-diffusers.safetensors`` (diffusers' names under ``transformer.``, ``vae.``,
``audio_vae.``, ``vocoder.``, ``connectors.``), ``diffusion_models/`` with the transformer alone in both layouts,
``text_encoders/gemma_3_12B_it.safetensors`` with a tiny ``tokenizer/`` beside it. ``LTX2Pipeline`` over the same
modules is the numerical oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import cloned_state, model_folders

TRANSFORMER = dict(in_channels=128, out_channels=128, num_attention_heads=2, attention_head_dim=128,
                   cross_attention_dim=256, audio_in_channels=32, audio_out_channels=32, audio_num_attention_heads=2,
                   audio_attention_head_dim=64, audio_cross_attention_dim=128, num_layers=2, caption_channels=128)
VIDEO_VAE = dict(block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32),
                 layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), patch_size=4,
                 spatial_compression_ratio=32, temporal_compression_ratio=8)
AUDIO_VAE = dict(base_channels=32, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=8, mel_bins=16)
VOCODER = dict(in_channels=32, hidden_channels=32)
CONNECTORS = dict(caption_channels=128, text_proj_in_factor=3, video_connector_num_attention_heads=1,
                  video_connector_attention_head_dim=128, audio_connector_num_attention_heads=1,
                  audio_connector_attention_head_dim=128, video_connector_num_layers=1, audio_connector_num_layers=1)
#: Gemma-3's non-size settings as in the 12B release (the loader takes them from its shipped config).
GEMMA = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=64, query_pre_attn_scalar=64, sliding_window=1024, rms_norm_eps=1e-6,
             rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                              "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}})
CHECKPOINT = "ltx2-tiny.safetensors"
DIFFUSERS_CHECKPOINT = "ltx2-tiny-diffusers.safetensors"
LAYOUTS = {"comfyui": "ltx2-tiny-comfyui.safetensors", "diffusers": "ltx2-tiny-transformer-diffusers.safetensors"}
TEXT = "gemma_3_12B_it.safetensors"
CORPUS = "a red cat walking on the sky blue square worst quality video of the sea with waves and birds singing"

_VAE_ORIGINAL = (("encoder.down_blocks.0.downsamplers.0.", "encoder.down_blocks.1."),
                 ("encoder.down_blocks.1.downsamplers.0.", "encoder.down_blocks.3."),
                 ("encoder.down_blocks.2.downsamplers.0.", "encoder.down_blocks.5."),
                 ("encoder.down_blocks.3.downsamplers.0.", "encoder.down_blocks.7."),
                 ("encoder.down_blocks.0.", "encoder.down_blocks.0."),
                 ("encoder.down_blocks.1.", "encoder.down_blocks.2."),
                 ("encoder.down_blocks.2.", "encoder.down_blocks.4."),
                 ("encoder.down_blocks.3.", "encoder.down_blocks.6."),
                 ("encoder.mid_block.", "encoder.down_blocks.8."), ("decoder.mid_block.", "decoder.up_blocks.0."),
                 ("decoder.up_blocks.0.upsamplers.0.", "decoder.up_blocks.1."),
                 ("decoder.up_blocks.1.upsamplers.0.", "decoder.up_blocks.3."),
                 ("decoder.up_blocks.2.upsamplers.0.", "decoder.up_blocks.5."),
                 ("decoder.up_blocks.0.", "decoder.up_blocks.2."), ("decoder.up_blocks.1.", "decoder.up_blocks.4."),
                 ("decoder.up_blocks.2.", "decoder.up_blocks.6."))


def transformer_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's names (under ``model.diffusion_model.``) for a diffusers LTX-2 transformer; checked with diffusers'
    converter."""
    from diffusers.loaders.single_file_utils import (
        convert_ltx2_transformer_to_diffusers,
    )

    out = {}
    for key, value in state.items():
        new = key.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single")
        for a, b in (("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
                     ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
                     ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
                     ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
                     ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
                     ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
                     ("norm_q", "q_norm"), ("norm_k", "k_norm")):
            new = new.replace(a, b)
        out["model.diffusion_model." + new] = value
    back = convert_ltx2_transformer_to_diffusers(dict(out))
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:5]
    return out


def vae_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """Original names (under ``vae.``) for a diffusers LTX-2 video VAE; checked with diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_ltx2_vae_to_diffusers

    out = {}
    for key, value in state.items():
        new = {"latents_mean": "per_channel_statistics.mean-of-means",
               "latents_std": "per_channel_statistics.std-of-means"}.get(key, key)
        for a, b in _VAE_ORIGINAL:
            if new.startswith(a):
                new = b + new[len(a):]
                break
        out["vae." + new.replace("resnets", "res_blocks")] = value
    back = convert_ltx2_vae_to_diffusers(dict(out))
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:5]
    return out


def connectors_to_comfy(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's names for ``LTX2TextConnectors`` tensors (text projection and the two connectors)."""
    out = {}
    for key, value in state.items():
        if key.startswith("text_proj_in."):
            out["text_embedding_projection.aggregate_embed." + key[len("text_proj_in."):]] = value
            continue
        which, rest = key.split(".", 1)
        rest = rest.replace("transformer_blocks.", "transformer_1d_blocks.").replace(".norm_q.", ".q_norm.")
        rest = rest.replace(".norm_k.", ".k_norm.")
        out[f"model.diffusion_model.{which.replace('_connector', '')}_embeddings_connector.{rest}"] = value
    return out


def audio_to_comfy(vae: dict[str, Any], vocoder: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's names for the audio VAE (``audio_vae.``) and vocoder (``vocoder.``)."""
    out = {}
    for key, value in vae.items():
        key = {"latents_mean": "per_channel_statistics.mean-of-means",
               "latents_std": "per_channel_statistics.std-of-means"}.get(key, key)
        out["audio_vae." + key] = value
    for key, value in vocoder.items():
        for a, b in (("conv_in.", "conv_pre."), ("upsamplers.", "ups."), ("resnets.", "resblocks."),
                     ("conv_out.", "conv_post.")):
            if key.startswith(a):
                key = b + key[len(a):]
        out["vocoder." + key] = value
    return out


def tokenizer(folder: Path) -> Any:
    """A tiny SentencePiece-style BPE with Gemma's special tokens (pad 0, eos 1, bos 2), saved in ``folder``."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import GemmaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                              unk_token="<unk>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return GemmaTokenizerFast.from_pretrained(str(folder))


@dataclass
class TinyLTX2:
    """The tiny modules and where their files are."""

    transformer: Any
    vae: Any
    audio_vae: Any
    vocoder: Any
    connectors: Any
    gemma: Any
    tokenizer: Any
    home: Path

    def pipeline(self) -> Any:
        """LTX2Pipeline over the same modules with LTX-Video's scheduler (0.95/2.05 shifts, terminal 0.1)."""
        from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline

        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                    base_image_seq_len=1024, max_image_seq_len=4096,
                                                    shift_terminal=0.1)
        return LTX2Pipeline(scheduler=scheduler, vae=self.vae, audio_vae=self.audio_vae, text_encoder=self.gemma,
                            tokenizer=self.tokenizer, connectors=self.connectors, transformer=self.transformer,
                            vocoder=self.vocoder)


def _state(module: Any) -> dict[str, Any]:
    return cloned_state(module)


def build(home: Path) -> TinyLTX2:
    """Build the tiny LTX-2 and write its files under ``home/models``."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors, LTX2Vocoder
    from safetensors.torch import save_file
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(**TRANSFORMER).eval()
    with torch.no_grad():  # random modulation tables, so a wrong mapping shows
        for name, p in transformer.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    vae = AutoencoderKLLTX2Video(**VIDEO_VAE).eval()
    audio_vae = AutoencoderKLLTX2Audio(**AUDIO_VAE).eval()
    with torch.no_grad():  # non-trivial latent statistics
        vae.latents_mean.copy_(torch.randn(128) * 0.1)
        vae.latents_std.copy_(torch.rand(128) + 0.5)
        audio_vae.latents_mean.copy_(torch.randn_like(audio_vae.latents_mean) * 0.1)
        audio_vae.latents_std.copy_(torch.rand_like(audio_vae.latents_std) + 0.5)
    vocoder = LTX2Vocoder(**VOCODER).eval()
    connectors = LTX2TextConnectors(**CONNECTORS).eval()
    models = model_folders(home, "checkpoints", "diffusion_models", "text_encoders")
    tok = tokenizer(models / "text_encoders" / "tokenizer")
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tok), **GEMMA)).eval()
    t_state, v_state, a_state = _state(transformer), _state(vae), _state(audio_vae)
    voc_state, c_state = _state(vocoder), _state(connectors)
    original = transformer_to_original(t_state)
    save_file(t_state, str(models / "diffusion_models" / LAYOUTS["diffusers"]))
    save_file(original, str(models / "diffusion_models" / LAYOUTS["comfyui"]))
    save_file({**original, **connectors_to_comfy(c_state), **vae_to_original(v_state),
               **audio_to_comfy(a_state, voc_state)}, str(models / "checkpoints" / CHECKPOINT))
    prefixed = {f"{prefix}.{k}": v for prefix, state in (("transformer", t_state), ("vae", v_state),
                                                         ("audio_vae", a_state), ("vocoder", voc_state),
                                                         ("connectors", c_state)) for k, v in state.items()}
    save_file(prefixed, str(models / "checkpoints" / DIFFUSERS_CHECKPOINT))
    g_state = {k: v for k, v in _state(gemma).items() if k != "lm_head.weight"}  # tied to the embeddings
    save_file(g_state, str(models / "text_encoders" / TEXT))
    return TinyLTX2(transformer, vae, audio_vae, vocoder, connectors, gemma, tok, home)
