"""The embedded model's architecture: model configs, the word-level tokenizer and model constructors."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import shapes

MAX_TOKENS = 16
TEXT_HIDDEN = 128

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    # few groups: GroupNorm with one channel per group is InstanceNorm and erases the absolute
    # colour of flat regions (the prototype's washed-out backgrounds); 4-8 channels per group keep it
    norm_num_groups=4,
    sample_size=64,
)

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=TEXT_HIDDEN,
    attention_head_dim=4,  # (diffusers' legacy name: number of heads)
    norm_num_groups=8,
)

SCHED_KW = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
)


# --------------------------------------------------------------------------- tokenizer
_BASE_CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(",.!?'-")


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    toks = list(word[:-1]) + [word[-1] + "</w>"]
    while len(toks) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(toks, toks[1:]))]
        r, _ = min(pairs)
        if r == math.inf:
            break
        first, second = [p for p in ranks if ranks[p] == r][0]
        out, i = [], 0
        while i < len(toks):
            if i < len(toks) - 1 and toks[i] == first and toks[i + 1] == second:
                out.append(first + second)
                i += 2
            else:
                out.append(toks[i])
                i += 1
        toks = out
    return toks


def build_vocab(words=shapes.VOCAB_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Word-level BPE: merges chosen so that every caption word becomes exactly one token."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for _ in range(100):
        changed = False
        for w in words:
            toks = _bpe(w, ranks)
            while len(toks) > 1:
                pair = (toks[0], toks[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
                toks = _bpe(w, ranks)
        if not changed:
            break
    vocab: dict[str, int] = {}
    for c in _BASE_CHARS:
        vocab.setdefault(c, len(vocab))
    for c in _BASE_CHARS:
        vocab.setdefault(c + "</w>", len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def build_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS, pad_token="<|endoftext|>",
                        unk_token="<|endoftext|>", bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    tok.save_pretrained(str(folder))
    # the saved folder must load with a plain from_pretrained and give one token per word
    tok = CLIPTokenizer.from_pretrained(str(folder))
    assert tok.model_max_length == MAX_TOKENS, tok.model_max_length
    for w in shapes.VOCAB_WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] == vocab[w + "</w>"], (w, ids)
    return tok


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def make_text_encoder(tok):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_HIDDEN * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN,
        hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def make_train_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHED_KW)


def make_sample_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**SCHED_KW, timestep_spacing="trailing", steps_offset=1)


def nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())
