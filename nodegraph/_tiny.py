"""Tiny SD1.x- and SDXL-shaped models from configs with fixed seeds (for ``nodegraph.testing``), saved as a diffusers
folder and as an LDM single file.

The single file uses the original (CompVis/LDM) key names, as real ``*.safetensors`` checkpoints do, so that the
loaders are tested on the same path a user's file takes. Because a tiny model's tokenizer and configs cannot be
inferred from its weights, the file also carries them in its header (see ``nodegraph.diffusion.detect.METADATA_KEY``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diffusion.ldm import open_clip_to_ldm, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm

TEXT_HIDDEN = 32
WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "green", "blue", "circle", "square", "triangle", "on",
         "background", "painting", "house", "tree", "sky")

UNET_CONFIG: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=32,
)
VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
    norm_num_groups=32, sample_size=16, scaling_factor=0.18215,
)
SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    timestep_spacing="leading",
)


def bytes_to_unicode() -> dict[int, str]:
    """The byte → printable character table of byte-level BPE (GPT-2/CLIP)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocab(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style vocabulary: every byte (alone and word-final), merges spelling ``words``, then the specials."""
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        if len(word) < 2:
            continue
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + "</w>" if i == len(word) - 1 else ch
            pair = (left, right)
            if pair not in merges:
                merges.append(pair)
                vocab.setdefault(left + right, len(vocab))
            left = left + right
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def make_tokenizer(folder: Path):
    """A CLIPTokenizer over ``tiny_vocab`` (SD1.x settings), saved into ``folder`` and loaded back from there."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token="<|endoftext|>",
                        unk_token="<|endoftext|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    return CLIPTokenizer.from_pretrained(str(folder))


def make_components(tokenizer, text_heads: int = 4) -> dict[str, Any]:
    """UNet, VAE and text encoder with fixed random weights (seeded), plus the scheduler."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    torch.manual_seed(1)
    vae = AutoencoderKL(**VAE_CONFIG)
    torch.manual_seed(2)
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=TEXT_HIDDEN, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=text_heads, max_position_embeddings=77, projection_dim=TEXT_HIDDEN, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(text_cfg)
    for m in (unet, vae, text_encoder):
        m.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": PNDMScheduler(**SCHEDULER_CONFIG)}


def to_ldm_state_dict(components: dict[str, Any]) -> dict[str, Any]:
    """One LDM-format state dict from the UNet, VAE and text encoder (contiguous CPU tensors)."""
    unet, vae, te = components["unet"], components["vae"], components["text_encoder"]
    state: dict[str, Any] = {}
    state.update(unet_to_ldm(unet.state_dict(), unet.config.layers_per_block))
    state.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update(text_encoder_to_ldm(te.state_dict()))
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def folder_metadata(folder: Path) -> str:
    """The configs and tokenizer files of a diffusers folder as one JSON string (the single file's header)."""
    files: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".txt"):
            files[path.relative_to(folder).as_posix()] = path.read_text(encoding="utf-8")
    return json.dumps({"format": 1, "files": files})


@dataclass
class TinySD:
    """The tiny model as the tests see it: where it was saved and a config pointing there."""

    home: Path
    models_dir: Path
    folder: Path
    single_file: Path
    config: Any
    components: dict[str, Any]


def build_tiny_sd(home: Path) -> TinySD:
    """Build the tiny model; save it in ``home/models/checkpoints`` as ``tiny-sd/`` and ``tiny-sd.safetensors``."""
    import os

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    from nodegraph.config import EngineConfig
    from nodegraph.diffusion.detect import METADATA_KEY

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = EngineConfig(home=home, models_dir=home / "models")
    config.ensure_dirs()
    ckpts = config.model_dir("checkpoints")
    tok = make_tokenizer(home / "tmp-tokenizer")
    parts = make_components(tok)
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    folder = ckpts / "tiny-sd"
    pipe.save_pretrained(str(folder), safe_serialization=True)
    single = ckpts / "tiny-sd.safetensors"
    save_file(to_ldm_state_dict(parts), str(single), metadata={METADATA_KEY: folder_metadata(folder)})
    return TinySD(home=home, models_dir=config.models_dir, folder=folder, single_file=single, config=config,
                  components=parts)


# ---- a tiny SDXL-shaped model (two text encoders, pooled text + size conditioning) ---------------------------------

TEXT2_HIDDEN = 48
SDXL_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=TEXT_HIDDEN + TEXT2_HIDDEN, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=TEXT2_HIDDEN + 6 * 8, norm_num_groups=32,
)


def make_sdxl_components(tokenizer, tokenizer_2) -> dict[str, Any]:
    """SDXL-shaped UNet, VAE and the two text encoders (CLIP-L-like and bigG-like with projection), seeded."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def text_config(hidden: int, act: str) -> Any:
        return CLIPTextConfig(vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden, intermediate_size=hidden * 2,
                              num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                              projection_dim=hidden, hidden_act=act, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

    torch.manual_seed(10)
    unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    torch.manual_seed(11)
    vae = AutoencoderKL(**dict(VAE_CONFIG, scaling_factor=0.13025))
    torch.manual_seed(12)
    te = CLIPTextModel(text_config(TEXT_HIDDEN, "quick_gelu"))
    torch.manual_seed(13)
    te2 = CLIPTextModelWithProjection(text_config(TEXT2_HIDDEN, "gelu"))
    for m in (unet, vae, te, te2):
        m.eval()
    sched = EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                      if k not in ("skip_prk_steps", "set_alpha_to_one")})
    return {"unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2, "tokenizer": tokenizer,
            "tokenizer_2": tokenizer_2, "scheduler": sched}


def build_tiny_sdxl(home: Path) -> TinySD:
    """A tiny SDXL-shaped model as ``tiny-sdxl/`` and ``tiny-sdxl.safetensors`` (SGM keys: conditioner.embedders)."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    from nodegraph.config import EngineConfig
    from nodegraph.diffusion.detect import METADATA_KEY

    config = EngineConfig(home=home, models_dir=home / "models")
    config.ensure_dirs()
    tok = make_tokenizer(home / "tmp-tokenizer")
    tok2 = CLIPTokenizer.from_pretrained(str(home / "tmp-tokenizer"), pad_token="!")
    parts = make_sdxl_components(tok, tok2)
    folder = config.model_dir("checkpoints") / "tiny-sdxl"
    StableDiffusionXLPipeline(**parts).save_pretrained(str(folder), safe_serialization=True)
    state: dict[str, Any] = {}
    state.update(unet_to_ldm(parts["unet"].state_dict(), parts["unet"].config.layers_per_block))
    state.update(vae_to_ldm(parts["vae"].state_dict(), len(parts["vae"].config.block_out_channels)))
    state.update(text_encoder_to_ldm(parts["text_encoder"].state_dict(), "conditioner.embedders.0.transformer."))
    state.update(open_clip_to_ldm(parts["text_encoder_2"].state_dict(), "conditioner.embedders.1.model."))
    single = config.model_dir("checkpoints") / "tiny-sdxl.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(single),
              metadata={METADATA_KEY: folder_metadata(folder)})
    return TinySD(home=home, models_dir=config.models_dir, folder=folder, single_file=single, config=config,
                  components=parts)
