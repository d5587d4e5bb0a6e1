"""Loading Qwen-Image's split files offline: the diffusion transformer, the Qwen2.5-VL text encoder, its tokenizer.

Weights go into models built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``), so
the 20B transformer needs its own size in RAM. The tokenizer (Qwen2's byte-level BPE, vocab.json + merges.txt) is
not shipped: it is read from a ``qwen_tokenizer`` (or ``tokenizer``) folder beside the text-encoder file — the
``tokenizer/`` folder of the Qwen-Image (or Qwen2.5-VL) release holds exactly these files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..fp8 import unscale_fp8  # the shared fp8_scaled reader (other families still import it from here)
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, LatentFormat, TextEncoder
from .detect import (
    text_encoder_config,
    text_encoder_layout,
    transformer_config,
    transformer_prefix,
)

log = logging.getLogger(__name__)

#: Qwen-Image's latent space as the MODEL sees it: the VAE wrapper already normalises per channel.
QWEN_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=1.0, shift_factor=0.0)
#: ComfyUI's Qwen-Image sampling without ModelSamplingAuraFlow: discrete flow, shift 1.15, multiplier 1.
DEFAULT_SHIFT = 1.15
TOKENIZER_FOLDERS = ("qwen_tokenizer", "tokenizer")


def is_qwen_transformer(header: Header) -> bool:
    """Whether a diffusion-model file holds a Qwen-Image transformer."""
    return transformer_prefix(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], header: Header, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Qwen-Image transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings

    prefix = transformer_prefix(header.shapes)
    if prefix is None:
        raise UnknownModelError(f"{name} holds no Qwen-Image transformer")
    config, reasons = transformer_config(header.shapes, prefix)
    log.info("%s: qwen-image (%s): %s", name, "diffusers names", "; ".join(reasons))
    if prefix:
        state = strip_prefix(state, prefix)
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    transformer = filled_model(QwenImageTransformer2DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch="qwen-image", source=name, latent=QWEN_LATENT,
                          family="qwen_image", flow=FlowSettings("discrete", DEFAULT_SHIFT, 1.0))


def load_transformer(path: Path, name: str, weight_dtype: str = "default", dtype: Any = None) -> DiffusionModel:
    """MODEL from a Qwen-Image diffusion-model file."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), read_header(Path(path)), name, weight_dtype, dtype)


def _rename(state: dict[str, Any], lm: str, vis: str) -> dict[str, Any]:
    """transformers 5 names for a Qwen2.5-VL state dict (emptying ``state``)."""
    out: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        if key.startswith(vis):
            out["model.visual." + key[len(vis):]] = tensor
        elif key.startswith(lm):
            out["model.language_model." + key[len(lm):]] = tensor
        elif key == "lm_head.weight":
            out[key] = tensor
    return out


#: Config entries naming the vision special tokens, and their text.
_VISION_TOKENS = (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                  ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))


def text_encoder_from_state(state: dict[str, Any], header: Header, name: str, dtype: Any = None,
                            tokenizer: Any = None) -> Any:
    """``Qwen2_5_VLForConditionalGeneration`` from a Qwen2.5-VL file's tensors (ComfyUI or transformers names).

    A file without the vision tower loads for text-to-image (the tower is left out); without ``lm_head`` (unused:
    only hidden states are read) the head shares the input embedding.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    layout = text_encoder_layout(header.shapes)
    if layout is None:
        raise UnknownModelError(f"{name} is not a Qwen2.5-VL text encoder (no model.layers.*.self_attn.q_proj.bias); "
                                "CLIPLoader type qwen_image takes qwen_2.5_vl_7b.safetensors")
    values = text_encoder_config(header.shapes, *layout)
    if tokenizer is not None:  # the vision tokens' ids as this vocabulary numbers them
        for key, token in _VISION_TOKENS:
            found = tokenizer.convert_tokens_to_ids(token)
            if isinstance(found, int) and found != tokenizer.unk_token_id:
                values[key] = found
    config = Qwen2_5_VLConfig(**values)
    state = _rename(unscale_fp8(state, dtype or torch.float32), *layout)
    with quiet_libraries(), init_empty_weights():
        model = Qwen2_5_VLForConditionalGeneration(config)
    if not any(k.startswith("model.visual.") for k in state):
        log.info("%s: no vision tower in the file; text-to-image only", name)
        model.model.visual = torch.nn.Identity()
    if "lm_head.weight" not in state:  # unused for hidden states; the embedding's tensor stands in
        state["lm_head.weight"] = state.get("model.language_model.embed_tokens.weight")
    fill(model, state, dtype or torch.float32, name)
    return model


def qwen_tokenizer(encoder_path: Path) -> Any:
    """Qwen2's tokenizer from a ``qwen_tokenizer``/``tokenizer`` folder beside the text-encoder file."""
    from transformers import Qwen2TokenizerFast

    folder = Path(encoder_path).parent
    for cand in (folder / n for n in TOKENIZER_FOLDERS):
        if (cand / "tokenizer.json").is_file() or (cand / "vocab.json").is_file():
            return Qwen2TokenizerFast.from_pretrained(str(cand), local_files_only=True)
    raise FileNotFoundError(f"no Qwen2 tokenizer beside {Path(encoder_path).name}: put the tokenizer/ folder of the "
                            f"Qwen-Image release (vocab.json, merges.txt, tokenizer_config.json) in {folder} as "
                            f"{TOKENIZER_FOLDERS[0]}/")


def load_qwen_clip(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type qwen_image: the Qwen2.5-VL text encoder and its tokenizer."""
    from safetensors.torch import load_file

    from ..flow.loading import require_safetensors

    path = require_safetensors(path, name)
    tokenizer = qwen_tokenizer(path)
    model = text_encoder_from_state(load_file(str(path)), read_header(path), name, dtype, tokenizer)
    return TextEncoder(tokenizers=(tokenizer,), encoders=(model,), arch="qwen_image")


def load_qwen_clips(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry: CLIPLoader type qwen_image takes one file."""
    return load_qwen_clip(paths[0], names[0], dtype)


def load_qwen_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                          dtype: Any = None) -> DiffusionModel:
    """MODEL from a Qwen-Image transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), header, name, weight_dtype, dtype)


__all__ = ["DEFAULT_SHIFT", "QWEN_LATENT", "is_qwen_transformer", "load_qwen_clip", "load_qwen_clips",
           "load_qwen_transformer", "load_transformer",
           "qwen_tokenizer", "text_encoder_from_state", "transformer_from_state"]
