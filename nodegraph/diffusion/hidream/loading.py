"""Loading HiDream's split files offline: the diffusion transformer and the four text encoders.

Weights go into models built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``), so
the 17B transformer needs its own size in RAM. Text encoders (any subset, as ComfyUI allows): CLIP-L and CLIP-G
with their projections (HiDream pools both projected; "long" CLIPs with 248 positions keep them), T5-XXL, and
Llama-3.1-8B-Instruct as transformers' ``LlamaModel`` (only its hidden states are read; ``lm_head`` is skipped).
ComfyUI's "fp8_scaled" files load as weights × scale.

Llama's tokenizer is under Meta's licence and is not shipped: it is read from a ``llama_tokenizer`` (or
``tokenizer``) folder beside the Llama file — the ``tokenizer.json`` + ``tokenizer_config.json`` of the
Llama-3.1-8B-Instruct release. T5's vocabulary is the shipped one unless a ``t5_tokenizer`` folder is beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, TextEncoder
from .detect import is_llama, llama_config, transformer_config, transformer_prefix

log = logging.getLogger(__name__)

#: ComfyUI's HiDream sampling without ModelSamplingSD3: discrete flow, shift 1, model time sigma × 1000.
DEFAULT_SHIFT = 1.0
LLAMA_TOKENIZER_FOLDERS = ("llama_tokenizer", "tokenizer")
#: The order of a HiDream CLIP's tokenizers and encoders (None where that encoder was not loaded).
SLOTS = ("clip_l", "clip_g", "t5xxl", "llama")


def dequantized(state: dict[str, Any], dtype: Any, name: str) -> dict[str, Any]:
    """``state`` with ComfyUI's "fp8_scaled" weights (``X.scale_weight``) multiplied out in ``dtype``; the newer
    per-layer quantisation (``comfy_quant``) is refused with what to use instead."""
    import torch

    from ..fp8 import unscale_fp8

    if any(k.endswith((".comfy_quant", ".weight_scale")) for k in state):
        raise UnknownModelError(f"{name} is quantised per layer (comfy_quant), which this version does not load; use "
                                "the fp16/bf16 or fp8_scaled file")
    return unscale_fp8(state, dtype or torch.float32)


def is_hidream_transformer(header: Header) -> bool:
    """Whether a diffusion-model file holds a HiDream transformer."""
    return transformer_prefix(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], header: Header, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a HiDream transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import HiDreamImageTransformer2DModel

    from ..flow.loading import FLUX_LATENT, filled_model
    from ..flow.schedule import FlowSettings

    prefix = transformer_prefix(header.shapes)
    if prefix is None:
        raise UnknownModelError(f"{name} holds no HiDream transformer")
    config, reasons = transformer_config(header.shapes, prefix)
    log.info("%s: hidream (%s): %s", name, "ComfyUI layout" if prefix else "diffusers names", "; ".join(reasons))
    if prefix:
        state = strip_prefix(state, prefix)
    compute = dtype or torch.float32
    state = dequantized(state, compute, name)
    transformer = filled_model(HiDreamImageTransformer2DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch="hidream", source=name, latent=FLUX_LATENT,
                          family="hidream", flow=FlowSettings("discrete", DEFAULT_SHIFT, 1000.0))


def load_hidream_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                             dtype: Any = None) -> DiffusionModel:
    """``families.TRANSFORMER_FILES`` entry: MODEL from a HiDream transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), header, name, weight_dtype, dtype)


def llama_tokenizer(encoder_path: Path) -> Any:
    """Llama-3.1's tokenizer from a ``llama_tokenizer``/``tokenizer`` folder beside the Llama file, padding with its
    end token as HiDreamImagePipeline does."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(encoder_path).parent
    for cand in (folder / n for n in LLAMA_TOKENIZER_FOLDERS):
        if (cand / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast.from_pretrained(str(cand), local_files_only=True)
            if tok.eos_token is None:
                raise ValueError(f"the tokenizer in {cand} names no end token; use the tokenizer/ folder of the "
                                 "Llama-3.1-8B-Instruct release (its tokenizer_config.json sets <|eot_id|>)")
            tok.pad_token = tok.eos_token
            return tok
    raise FileNotFoundError(f"no Llama tokenizer beside {Path(encoder_path).name}: Llama-3.1's tokenizer is under "
                            f"Meta's licence and is not shipped; put the tokenizer/ folder of the "
                            f"Llama-3.1-8B-Instruct release (tokenizer.json, tokenizer_config.json) in {folder} as "
                            f"{LLAMA_TOKENIZER_FOLDERS[0]}/")


def llama_from_state(state: dict[str, Any], header: Header, name: str, dtype: Any = None) -> Any:
    """transformers' ``LlamaModel`` from a Llama file's tensors (``model.*`` names; ``lm_head`` is dropped)."""
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    config = LlamaConfig(**llama_config(header.shapes))
    state = dequantized(state, dtype, name)
    state = {k[len("model."):]: state.pop(k) for k in list(state) if k.startswith("model.")}
    with quiet_libraries(), init_empty_weights():
        model = LlamaModel(config)
    return fill(model, state, dtype, name)


def clip_from_state(state: dict[str, Any], header: Header, name: str, kind: str, dtype: Any = None) -> Any:
    """``CLIPTextModelWithProjection`` for CLIP-L or CLIP-G (``kind``) from a file's tensors; a file without
    ``text_projection`` (a plain CLIP-L) gets the identity, as ComfyUI does."""
    import torch
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ..flow.detect import encoder_prefix
    from ..flow.loading import _clip_config, _clip_g_config, fill
    from ..loading import quiet_libraries

    prefix = encoder_prefix(header)
    prefix = prefix.removesuffix("text_model.")
    shapes = {k[len(prefix):]: v for k, v in header.shapes.items() if k.startswith(prefix)}
    state = dequantized(strip_prefix(state, prefix), dtype, name)
    if kind == "clip_g":
        values = _clip_g_config(shapes)
    else:
        values = _clip_config(shapes, "text_model.")
        proj = shapes.get("text_projection.weight")
        values["projection_dim"] = int(proj[0]) if proj else int(values["hidden_size"])
    if "text_projection.weight" not in state:
        state["text_projection.weight"] = torch.eye(int(values["hidden_size"]))
    with quiet_libraries(), init_empty_weights():
        model = CLIPTextModelWithProjection(CLIPTextConfig(**values))
    return fill(model, state, dtype, name)


def _kinds(paths: list[Path], names: list[str], headers: list[Header]) -> list[str]:
    """The kind of each file: "llama", else CLIP-L/CLIP-G/T5 as flow.loading.clip_kinds tells them apart."""
    from ..flow.loading import clip_kinds

    kinds = ["llama" if is_llama(h.shapes) else "" for h in headers]
    rest = [i for i, k in enumerate(kinds) if not k]
    if rest:
        for i, kind in zip(rest, clip_kinds([paths[i] for i in rest], [names[i] for i in rest])):
            kinds[i] = kind
    return kinds


def load_hidream_clips(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry (type hidream): CLIP for any of CLIP-L, CLIP-G, T5-XXL and Llama-3.1 files."""
    from safetensors.torch import load_file

    from ..flow.loading import (
        require_safetensors,
        t5_tokenizer,
        text_encoder_from_state,
    )
    from ..loading import clip_tokenizer

    paths = [Path(p) for p in paths]
    for path, name in zip(paths, names):
        require_safetensors(path, name)
    headers = [read_header(p) for p in paths]
    kinds = _kinds(paths, names, headers)
    for kind in set(kinds):
        if kinds.count(kind) > 1:
            twice = [n for n, k in zip(names, kinds) if k == kind]
            raise ValueError(f"{' and '.join(twice)} are both {kind}; HiDream takes one file of each of CLIP-L, "
                             "CLIP-G, T5-XXL and Llama-3.1-8B-Instruct")
    tokenizers: dict[str, Any] = {}
    encoders: dict[str, Any] = {}
    for path, name, header, kind in zip(paths, names, headers, kinds):
        if kind == "llama":
            tokenizers[kind] = llama_tokenizer(path)
            encoders[kind] = llama_from_state(load_file(str(path)), header, name, dtype)
        elif kind == "t5xxl":
            tokenizers[kind] = t5_tokenizer(path if (path.parent / "t5_tokenizer").is_dir() else None)
            state = dequantized(load_file(str(path)), dtype, name)
            encoders[kind] = text_encoder_from_state(state, header, name, dtype)[1]
        else:
            model = clip_from_state(load_file(str(path)), header, name, kind, dtype)
            positions = int(model.config.max_position_embeddings)
            tokenizers[kind] = clip_tokenizer("!" if kind == "clip_g" else "<|endoftext|>", positions)
            encoders[kind] = model
    return TextEncoder(tokenizers=tuple(tokenizers.get(k) for k in SLOTS),
                       encoders=tuple(encoders.get(k) for k in SLOTS), arch="hidream")


__all__ = ["DEFAULT_SHIFT", "LLAMA_TOKENIZER_FOLDERS", "SLOTS", "clip_from_state", "dequantized",
           "is_hidream_transformer", "llama_from_state", "llama_tokenizer", "load_hidream_clips",
           "load_hidream_transformer", "transformer_from_state"]
