"""UMT5-XXL text encoders for Wan (CLIPLoader type ``wan``): loading, the SentencePiece vocabulary, encoding.

Files: ComfyUI's ``umt5_xxl_*.safetensors`` or transformers' ``UMT5EncoderModel`` weights (``encoder.block.*``,
``shared.weight``; a relative-attention bias in every layer marks UMT5). The config comes from the shipped
``configs/wan/umt5_xxl.json`` with the sizes read from the shapes.

Vocabulary (not shipped: no Apache-2.0 copy of UMT5's 256k SentencePiece model was found to redistribute), looked up
in this order: the ``spiece_model`` byte tensor inside the encoder file (ComfyUI's repackaged UMT5 files carry it),
then a ``umt5_tokenizer`` or ``tokenizer`` folder beside the file (``spiece.model`` or ``tokenizer.json``, e.g.
google/umt5-xxl's tokenizer files).

Encoding follows ComfyUI and ``WanPipeline``: the prompt's tokens and the end token, padded with 0 to at least 512,
run with the attention mask, the states of padding positions zeroed: CONDITIONING ``[(states [1, T, D], {})]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import TextEncoder
from .wan_files import shipped_config

MIN_LENGTH = 512
SPIECE_KEY = "spiece_model"
_FOLDERS = ("umt5_tokenizer", "tokenizer")


def is_umt5(shapes: Any) -> bool:
    """Whether tensor names are a UMT5 encoder's (a relative-attention bias in the second layer too)."""
    return any(k.endswith("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight") for k in shapes)


def _prefix(keys: Any) -> str:
    mark = "encoder.block.0.layer.0.SelfAttention.q.weight"
    for k in keys:
        if k.endswith(mark):
            return k[:-len(mark)]
    raise UnknownModelError("not a UMT5 encoder: no encoder.block.0 self-attention")


def _config(shapes: dict[str, Any]) -> dict[str, Any]:
    emb = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    block = "encoder.block.0.layer."
    buckets, heads = shapes[block + "0.SelfAttention.relative_attention_bias.weight"]
    layers = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.block.")}
    return dict(shipped_config("umt5_xxl"), vocab_size=emb[0], d_model=emb[1], num_heads=heads,
                d_kv=shapes[block + "0.SelfAttention.q.weight"][0] // heads,
                d_ff=shapes[block + "1.DenseReluDense.wi_0.weight"][0], num_layers=len(layers),
                relative_attention_num_buckets=buckets)


def tokenizer_from(spiece: bytes | None, encoder_path: Path | None, name: str) -> Any:
    """UMT5's tokenizer from a SentencePiece model's bytes, else from a tokenizer folder beside ``encoder_path``."""
    from transformers import T5TokenizerFast

    from ..loading import quiet_libraries

    if spiece:
        with tempfile.TemporaryDirectory() as tmp, quiet_libraries():
            (Path(tmp) / "spiece.model").write_bytes(spiece)
            return T5TokenizerFast.from_pretrained(tmp, extra_ids=0, legacy=True, local_files_only=True)
    if encoder_path is not None:
        for folder in _FOLDERS:
            cand = Path(encoder_path).parent / folder
            if (cand / "tokenizer.json").is_file() or (cand / "spiece.model").is_file():
                with quiet_libraries():
                    return T5TokenizerFast.from_pretrained(str(cand), local_files_only=True, legacy=True)
    raise UnknownModelError(f"{name} carries no UMT5 vocabulary (no {SPIECE_KEY!r} tensor); use ComfyUI's "
                            "umt5_xxl file, or put UMT5's spiece.model or tokenizer.json in a 'umt5_tokenizer' folder "
                            "next to it")


def load_umt5(path: Path, name: str, dtype: Any = None) -> tuple[Any, Any]:
    """(tokenizer, UMT5EncoderModel) from a UMT5 text-encoder file."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import UMT5Config, UMT5EncoderModel

    from ..flow.loading import fill, require_safetensors
    from ..loading import quiet_libraries

    path = require_safetensors(path, name)
    header = read_header(path)
    if not is_umt5(header.shapes):
        raise UnknownModelError(f"{name} is not a UMT5-XXL text encoder (type wan takes umt5_xxl_*.safetensors)")
    from ..fp8 import unscale_fp8

    state = unscale_fp8(load_file(str(path)), dtype)  # umt5_xxl_fp8_e4m3fn_scaled: weights times their scales
    spiece = state.pop(SPIECE_KEY, None)
    prefix = _prefix(state)
    state = strip_prefix(state, prefix)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    with quiet_libraries(), init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**_config(shapes)))
    shared = state.pop("encoder.embed_tokens.weight", None)
    state.setdefault("shared.weight", shared)
    model.encoder.embed_tokens = model.shared  # tied: one tensor
    fill(model, state, dtype, name)
    data = None if spiece is None else bytes(spiece.numpy().tobytes())
    return tokenizer_from(data, path, name), model


def load_wan_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type ``wan``: one UMT5-XXL file."""
    if len(paths) != 1:
        raise ValueError("type wan takes one text encoder file (UMT5-XXL); use CLIPLoader")
    tokenizer, model = load_umt5(paths[0], names[0], dtype)
    return TextEncoder(tokenizers=(tokenizer,), encoders=(model,), arch="wan")


def encode_wan(clip: TextEncoder, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for a Wan CLIP (UMT5): states [1, max(512, tokens), D], padding zeroed."""
    from ..flow.text import masked_t5

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text, add_special_tokens=True, truncation=False).input_ids
    states, _ = masked_t5(tokenizer, encoder, ids, device, MIN_LENGTH, max(1, int(max_chunks)) * MIN_LENGTH, "UMT5")
    states[:, len(ids):] = 0.0
    return [(states.cpu(), {})]


__all__ = ["MIN_LENGTH", "SPIECE_KEY", "encode_wan", "is_umt5", "load_umt5", "load_wan_clip", "tokenizer_from"]
