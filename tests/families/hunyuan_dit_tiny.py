"""A tiny random-weight HunyuanDiT saved as ComfyUI's all-in-one ``hunyuan_dit_1.2.safetensors``:

- ``model.diffusion_model.``: the DiT in the original names (``convert.to_original`` of a diffusers state),
- ``text_encoders.hydit_clip.transformer.bert.``: a tiny BERT, its WordPiece vocabulary in ``tokenizer/vocab.txt``
  beside the checkpoint (as the diffusers release's ``tokenizer/`` folder),
- ``text_encoders.mt5xl.transformer.`` + ``text_encoders.mt5xl.spiece_model``: a tiny T5 encoder and its
  SentencePiece model (T5's ids: pad 0, eos 1, unk 2),
- ``vae.``: an SDXL-style VAE (LDM names, scaling 0.13025).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_kit import jitter

CHECKPOINT = "hunyuan_dit_1.2.safetensors"
CORPUS = ("a photo of the red cat on the sky a bottle with a galaxy inside it on top of a wooden table on a snowy "
          "mountain with the ocean and clouds in the background 彩虹星系 一只猫")
WORDS = ["a", "photo", "of", "the", "red", "cat", "on", "sky", "bottle", "with", "galaxy", "inside", "it", "top", "wooden", "table", "snowy", "mountain", "ocean", "and", "clouds", "in", "background"]
DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, patch_size=2, sample_size=8, hidden_size=16,
           num_layers=4, mlp_ratio=2.0, learn_sigma=True, cross_attention_dim=32, cross_attention_dim_t5=24,
           pooled_projection_dim=16, text_len=77, text_len_t5=256)
BERT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
            max_position_embeddings=128, type_vocab_size=2, layer_norm_eps=1e-12)
T5 = dict(d_model=24, d_kv=8, num_heads=3, d_ff=32, num_layers=1, relative_attention_num_buckets=8,
          feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
           up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
           latent_channels=4, norm_num_groups=32, sample_size=32, scaling_factor=0.13025)


@dataclass
class TinyHunyuanDiT:
    """The tiny modules (diffusers/transformers) and the home holding their files."""

    transformer: Any
    bert: Any
    mt5: Any
    vae: Any
    bert_tokenizer: Any
    mt5_tokenizer: Any
    home: Path

    def pipeline(self, scheduler: Any) -> Any:
        """HunyuanDiTPipeline on the tiny modules (no safety checker)."""
        from diffusers import HunyuanDiTPipeline

        return HunyuanDiTPipeline(vae=self.vae, text_encoder=self.bert, tokenizer=self.bert_tokenizer,
                                  transformer=self.transformer, scheduler=scheduler, safety_checker=None,
                                  feature_extractor=None, requires_safety_checker=False, text_encoder_2=self.mt5,
                                  tokenizer_2=self.mt5_tokenizer)


def spiece_model() -> bytes:
    """A tiny SentencePiece model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([CORPUS] * 20), model_writer=out, vocab_size=120,
                                   model_type="bpe", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", minloglevel=2, byte_fallback=False,
                                   character_coverage=1.0)
    return out.getvalue()


def bert_vocab(folder: Path) -> Path:
    """A small WordPiece vocabulary (the special tokens, the corpus' words and CJK characters) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for c in CORPUS if ord(c) > 127})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *chars]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder / "vocab.txt"


def _randomised(module: Any) -> Any:
    jitter(module)  # random norms and modulation so every weight matters
    return module.eval()


def build(home: Path, seed: int = 0, style_cond: bool = False) -> TinyHunyuanDiT:
    """Build the tiny modules with fixed seeds and save the all-in-one checkpoint under ``home/models``."""
    import tempfile

    from diffusers import AutoencoderKL, HunyuanDiT2DModel
    from safetensors.torch import save_file
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )

    from nodegraph.diffusion.hunyuan_dit.convert import to_original
    from nodegraph.diffusion.ldm import vae_to_ldm

    torch.manual_seed(seed)
    folder = home / "models" / "checkpoints"
    vocab = bert_vocab(folder / "tokenizer")
    bert_tok = BertTokenizer(str(vocab))
    spiece = spiece_model()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spiece)
        t5_tok = T5Tokenizer.from_pretrained(tmp, local_files_only=True, legacy=True, extra_ids=0)
    transformer = _randomised(HunyuanDiT2DModel(**DIT, use_style_cond_and_image_meta_size=style_cond))
    bert = BertModel(BertConfig(vocab_size=len(bert_tok), **BERT), add_pooling_layer=False).eval()
    mt5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), **T5)).eval()
    vae = AutoencoderKL(**VAE).eval()
    whole = {"model.diffusion_model." + k: v.contiguous() for k, v in to_original(transformer.state_dict()).items()}
    whole.update({"text_encoders.hydit_clip.transformer.bert." + k: v.contiguous()
                  for k, v in bert.state_dict().items() if k != "embeddings.position_ids"})
    whole.update({"text_encoders.mt5xl.transformer." + k: v.contiguous() for k, v in mt5.state_dict().items()
                  if k != "encoder.embed_tokens.weight"})
    whole["text_encoders.mt5xl.spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    whole.update({"vae." + k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 4, prefix="").items()})
    save_file(whole, str(folder / CHECKPOINT))
    return TinyHunyuanDiT(transformer, bert, mt5, vae, bert_tok, t5_tok, home)
