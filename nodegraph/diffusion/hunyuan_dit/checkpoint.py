"""All-in-one HunyuanDiT checkpoints (CheckpointLoaderSimple), as ComfyUI's ``hunyuan_dit_1.2.safetensors``:
the DiT in the original names under ``model.diffusion_model.``, the Chinese-CLIP BERT under
``text_encoders.hydit_clip.transformer.bert.``, mT5-XL under ``text_encoders.mt5xl.transformer.`` (with its
SentencePiece model as the uint8 tensor ``text_encoders.mt5xl.spiece_model``) and the SDXL-style VAE (LDM names)
under ``vae.``.

Tokenizers: mT5's comes from the file's ``spiece_model`` (else a ``tokenizer_2``/``mt5_tokenizer`` folder with
``spiece.model`` beside the checkpoint); BERT's vocabulary is not shipped: it is read from a ``tokenizer``
(or ``hydit_clip_tokenizer``) folder beside the checkpoint holding ``vocab.txt`` — the ``tokenizer/`` folder of the
HunyuanDiT diffusers release.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import Checkpoint, DiffusionModel, LatentFormat, TextEncoder, VAEModel
from .convert import to_diffusers, transformer_config

log = logging.getLogger(__name__)

TRANSFORMER = "model.diffusion_model."
BERT = "text_encoders.hydit_clip.transformer.bert."
MT5 = "text_encoders.mt5xl.transformer."
SPIECE = "text_encoders.mt5xl.spiece_model"
VAE = "vae."
#: ComfyUI's latent_formats.SDXL, HunyuanDiT's VAE scaling
HUNYUAN_DIT_LATENT = LatentFormat(channels=4, downscale=8, scaling_factor=0.13025)
BERT_FOLDERS = ("tokenizer", "hydit_clip_tokenizer")
MT5_FOLDERS = ("tokenizer_2", "mt5_tokenizer")


def scheduler_config(style_cond: bool) -> dict[str, Any]:
    """ComfyUI's sampling of HunyuanDiT (``HunyuanDiT1`` with size/style conditioning: linear_end 0.03, v1.0/1.1;
    ``HunyuanDiT``: 0.018, v1.2) as a diffusers scheduler config: v-prediction, scaled-linear betas."""
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.03 if style_cond else 0.018,
            "beta_schedule": "scaled_linear", "prediction_type": "v_prediction", "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "clip_sample": False}


def is_hunyuan_dit(shapes: dict[str, Any], prefix: str = TRANSFORMER) -> bool:
    """Whether tensor names hold a HunyuanDiT in the original/ComfyUI layout under ``prefix``."""
    return prefix + "mlp_t5.0.weight" in shapes and prefix + "x_embedder.proj.weight" in shapes


def _part(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return strip_prefix(state, prefix)


def transformer_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> DiffusionModel:
    """MODEL from the original-layout tensors of a HunyuanDiT (prefix removed; ``state`` is emptied)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import HunyuanDiT2DModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    config = transformer_config({k: tuple(v.shape) for k, v in state.items()})
    log.info("%s: HunyuanDiT %d blocks, hidden %d, style/size conditioning %s", name, config["num_layers"],
             config["hidden_size"], config["use_style_cond_and_image_meta_size"])
    with quiet_libraries(), init_empty_weights():
        transformer = HunyuanDiT2DModel.from_config(config)
    fill(transformer, to_diffusers(state), dtype or torch.float32, name)
    from .sampling import discrete_sigmas

    sched = scheduler_config(config["use_style_cond_and_image_meta_size"])
    return DiffusionModel(unet=transformer, scheduler_config=sched, arch="hunyuan-dit", source=name,
                          latent=HUNYUAN_DIT_LATENT, family="hunyuan_dit", flow=discrete_sigmas(sched))


def bert_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> Any:
    """transformers ``BertModel`` (no pooler) from ComfyUI's ``bert.``-less BERT tensors (``state`` is emptied)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import BertConfig, BertModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = len({k.split(".")[2] for k in state if k.startswith("encoder.layer.")})
    config = BertConfig(vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers,
                        num_attention_heads=max(1, int(hidden) // 64),
                        intermediate_size=int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
                        max_position_embeddings=int(state["embeddings.position_embeddings.weight"].shape[0]),
                        type_vocab_size=int(state["embeddings.token_type_embeddings.weight"].shape[0]),
                        layer_norm_eps=1e-12)
    with quiet_libraries(), init_empty_weights():
        model = BertModel(config, add_pooling_layer=False)
    state.pop("embeddings.position_ids", None)
    fill(model, state, dtype or torch.float32, f"{name}: BERT")
    return model


def mt5_from_state(state: dict[str, Any], name: str, dtype: Any = None) -> Any:
    """transformers ``T5EncoderModel`` (mT5 config) from ComfyUI's mT5-XL tensors (``state`` is emptied)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import T5Config, T5EncoderModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    vocab, d_model = state["shared.weight"].shape
    heads = int(state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1])
    inner = int(state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0])
    config = T5Config(vocab_size=int(vocab), d_model=int(d_model), d_kv=inner // heads, num_heads=heads,
                      d_ff=int(state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]),
                      num_layers=len({k.split(".")[2] for k in state if k.startswith("encoder.block.")}),
                      relative_attention_num_buckets=int(
                          state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[0]),
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                      tie_word_embeddings=False)
    with quiet_libraries(), init_empty_weights():
        model = T5EncoderModel(config)
    state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
    fill(model, state, dtype or torch.float32, f"{name}: mT5")
    return model


def _folder(path: Path, names: tuple[str, ...], files: tuple[str, ...]) -> Path | None:
    for cand in (Path(path).parent / n for n in names):
        if any((cand / f).is_file() for f in files):
            return cand
    return None


def bert_tokenizer(path: Path) -> Any:
    """BERT's WordPiece tokenizer from a ``tokenizer``/``hydit_clip_tokenizer`` folder beside the checkpoint."""
    from transformers import BertTokenizer

    folder = _folder(path, BERT_FOLDERS, ("vocab.txt",))
    if folder is None:
        raise FileNotFoundError(f"no BERT tokenizer beside {Path(path).name}: put the tokenizer/ folder of the "
                                f"HunyuanDiT release (vocab.txt, the Chinese-CLIP/bert-base-chinese vocabulary) in "
                                f"{Path(path).parent} as {BERT_FOLDERS[0]}/")
    return BertTokenizer.from_pretrained(str(folder), local_files_only=True)


def mt5_tokenizer(path: Path, spiece_model: Any = None) -> Any:
    """mT5's SentencePiece tokenizer from a folder beside the checkpoint, else from the file's ``spiece_model``."""
    from transformers import T5Tokenizer

    folder = _folder(path, MT5_FOLDERS, ("spiece.model",))
    if folder is not None:
        return T5Tokenizer.from_pretrained(str(folder), local_files_only=True, legacy=True)
    if spiece_model is None:
        raise FileNotFoundError(f"no mT5 tokenizer in or beside {Path(path).name}: use ComfyUI's "
                                "hunyuan_dit_1.2.safetensors (it carries text_encoders.mt5xl.spiece_model), or put "
                                f"the tokenizer_2/ folder of the HunyuanDiT release (spiece.model) in "
                                f"{Path(path).parent}")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spiece_model.numpy().tobytes())
        return T5Tokenizer.from_pretrained(tmp, local_files_only=True, legacy=True, extra_ids=0)


def hunyuan_dit_checkpoint(path: Path, name: str, dtype: Any = None) -> Checkpoint | None:
    """MODEL, CLIP and VAE of an all-in-one HunyuanDiT checkpoint; None for other files
    (``families.CHECKPOINT_FILES``)."""
    from safetensors.torch import load_file

    from .. import derive, single_file

    path = Path(path)
    header = read_header(path)
    if not is_hunyuan_dit(header.shapes):
        return None
    for prefix, what in ((BERT, "the BERT text encoder"), (MT5, "the mT5-XL text encoder"), (VAE, "the VAE")):
        if not any(k.startswith(prefix) for k in header.shapes):
            raise UnknownModelError(f"{name} holds a HunyuanDiT but not {what} (no {prefix}* tensors); use an "
                                    "all-in-one file such as ComfyUI's hunyuan_dit_1.2.safetensors")
    bert_tok = bert_tokenizer(path)
    state = load_file(str(path))
    spiece = state.pop(SPIECE, None)
    t5_tok = mt5_tokenizer(path, spiece)
    bert = bert_from_state(_part(state, BERT), name, dtype)
    mt5 = mt5_from_state(_part(state, MT5), name, dtype)
    vae_state = _part(state, VAE)
    model = transformer_from_state(_part(state, TRANSFORMER), name, dtype)
    vae_header = Header(header.path, {k: tuple(v.shape) for k, v in vae_state.items()}, header.metadata)
    config = dict(derive.vae_config(vae_header, ""))
    config["scaling_factor"] = HUNYUAN_DIT_LATENT.scaling_factor
    vae = single_file.vae(vae_state, config, name)
    clip = TextEncoder(tokenizers=(bert_tok, t5_tok), encoders=(bert, mt5), arch="hunyuan_dit")
    vae_model = VAEModel(vae=vae, scaling_factor=HUNYUAN_DIT_LATENT.scaling_factor, shift_factor=0.0, source=name)
    return Checkpoint(model=model, clip=clip, vae=vae_model, extras={"format": "single_file"})


__all__ = ["BERT", "HUNYUAN_DIT_LATENT", "MT5", "SPIECE", "TRANSFORMER", "VAE", "bert_from_state", "bert_tokenizer",
           "hunyuan_dit_checkpoint", "is_hunyuan_dit", "mt5_from_state", "mt5_tokenizer", "scheduler_config",
           "transformer_from_state"]
