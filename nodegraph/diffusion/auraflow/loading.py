"""Loading AuraFlow offline: the diffusion transformer (UNETLoader), the Pile-T5-XL text encoder and its tokenizer.

Weights go into models built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``).
Original/ComfyUI tensor names are renamed with diffusers' own converter
(``convert_auraflow_transformer_checkpoint_to_diffusers``). The tokenizer (Pile-T5's SentencePiece vocabulary) is
not shipped: it comes from a ``spiece_model`` byte tensor inside the file when ComfyUI saved one there, else from a
``pile_t5_tokenizer`` (or ``tokenizer``) folder beside the text-encoder/checkpoint file — the ``tokenizer/`` folder
of the AuraFlow release (fal/AuraFlow-v0.3) holds exactly these files.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, LatentFormat, TextEncoder
from .detect import (
    text_encoder_config,
    text_encoder_prefix,
    transformer_config,
    transformer_layout,
)

log = logging.getLogger(__name__)

#: AuraFlow's latent space: SDXL's 4-channel VAE (ComfyUI's latent_formats.SDXL).
AURA_LATENT = LatentFormat(channels=4, downscale=8, scaling_factor=0.13025, shift_factor=0.0)
#: ComfyUI's AuraFlow sampling without ModelSamplingAuraFlow: discrete flow, shift 1.73, multiplier 1.
DEFAULT_SHIFT = 1.73
TOKENIZER_FOLDERS = ("pile_t5_tokenizer", "tokenizer")
SPIECE_KEY = "spiece_model"


def is_auraflow_transformer(header: Header) -> bool:
    """Whether a diffusion-model file holds an AuraFlow transformer."""
    return transformer_layout(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], shapes: dict[str, Any], name: str,
                           weight_dtype: str = "default", dtype: Any = None) -> DiffusionModel:
    """MODEL from an AuraFlow transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import AuraFlowTransformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_auraflow_transformer_checkpoint_to_diffusers,
    )

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings

    found = transformer_layout(shapes)
    if found is None:
        raise UnknownModelError(f"{name} holds no AuraFlow transformer")
    prefix, layout = found
    config, reasons = transformer_config(shapes, prefix, layout)
    log.info("%s: auraflow: %s", name, "; ".join(reasons))
    state = strip_prefix(state, prefix)
    if layout == "original":
        state = convert_auraflow_transformer_checkpoint_to_diffusers(state)
    compute = dtype or torch.float32
    transformer = filled_model(AuraFlowTransformer2DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch="auraflow", source=name, latent=AURA_LATENT,
                          family="auraflow", flow=FlowSettings("discrete", DEFAULT_SHIFT, 1.0))


def load_auraflow_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                              dtype: Any = None) -> DiffusionModel:
    """``families.TRANSFORMER_FILES`` loader: MODEL from an AuraFlow transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), header.shapes, name, weight_dtype, dtype)


def pile_t5_tokenizer(location: Path, spiece: bytes | None = None) -> Any:
    """Pile-T5's tokenizer: from SentencePiece bytes carried in the file, else a ``pile_t5_tokenizer``/``tokenizer``
    folder beside ``location`` (the text-encoder or checkpoint file)."""
    from transformers import AutoTokenizer, T5TokenizerFast

    from ..loading import quiet_libraries

    if spiece:
        with tempfile.TemporaryDirectory() as tmp, quiet_libraries():
            (Path(tmp) / "spiece.model").write_bytes(spiece)
            return T5TokenizerFast.from_pretrained(tmp, extra_ids=0, legacy=True, local_files_only=True,
                                                   pad_token="<s>", eos_token="</s>")
    folder = Path(location).parent
    for cand in (folder / n for n in TOKENIZER_FOLDERS):
        if any((cand / f).is_file() for f in ("tokenizer.json", "spiece.model", "tokenizer.model")):
            with quiet_libraries():
                return AutoTokenizer.from_pretrained(str(cand), local_files_only=True)
    raise FileNotFoundError(f"no Pile-T5 tokenizer for {Path(location).name}: put the tokenizer/ folder of the "
                            f"AuraFlow release (tokenizer.json or spiece.model, tokenizer_config.json) in {folder} as "
                            f"{TOKENIZER_FOLDERS[0]}/")


def text_encoder_from_state(state: dict[str, Any], shapes: dict[str, Any], name: str, dtype: Any = None) -> Any:
    """``UMT5EncoderModel`` (Pile-T5-XL) from a text encoder's tensors (ComfyUI's or transformers' names)."""
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    prefix = text_encoder_prefix(shapes)
    if prefix is None:
        raise UnknownModelError(f"{name} is not a Pile-T5 text encoder (no relative-attention bias in "
                                "encoder.block.1); AuraFlow takes its pile_t5xl encoder")
    config = text_encoder_config(shapes, prefix)
    state = strip_prefix(state, prefix)
    with quiet_libraries(), init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**config))
    shared = state.pop("encoder.embed_tokens.weight", None)
    state.setdefault("shared.weight", shared)
    model.encoder.embed_tokens = model.shared  # tied: one tensor
    fill(model, state, dtype, name)
    return model


def pile_t5_clip(state: dict[str, Any], shapes: dict[str, Any], location: Path, name: str,
                 dtype: Any = None) -> TextEncoder:
    """CLIP (arch "auraflow") from a Pile-T5 encoder's tensors; the tokenizer as ``pile_t5_tokenizer`` finds it."""
    spiece = next((state.pop(k) for k in list(state) if k.endswith(SPIECE_KEY)), None)
    data = None if spiece is None else bytes(spiece.numpy().tobytes())
    tokenizer = pile_t5_tokenizer(location, data)
    model = text_encoder_from_state(state, shapes, name, dtype)
    return TextEncoder(tokenizers=(tokenizer,), encoders=(model,), arch="auraflow")


def load_pile_t5_clip(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP from a Pile-T5-XL text-encoder file (AuraFlow's)."""
    from safetensors.torch import load_file

    from ..flow.loading import require_safetensors

    path = require_safetensors(path, name)
    return pile_t5_clip(load_file(str(path)), read_header(path).shapes, path, name, dtype)


def is_pile_t5(shapes: dict[str, Any]) -> bool:
    """Whether a text-encoder file is Pile-T5-XL (UMT5 layout, 32128 tokens, 2048 wide) rather than UMT5-XXL."""
    prefix = text_encoder_prefix(shapes)
    if prefix is None:
        return False
    emb = shapes.get(prefix + "shared.weight") or shapes.get(prefix + "encoder.embed_tokens.weight")
    return emb is not None and int(emb[0]) < 100_000


__all__ = ["AURA_LATENT", "DEFAULT_SHIFT", "is_auraflow_transformer", "is_pile_t5", "load_auraflow_transformer",
           "load_pile_t5_clip", "pile_t5_clip", "pile_t5_tokenizer", "text_encoder_from_state",
           "transformer_from_state"]
