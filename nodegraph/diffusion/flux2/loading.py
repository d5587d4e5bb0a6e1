"""Loading Flux.2's split files offline: the diffusion transformer, the text encoder and its tokenizer.

- Transformer (UNETLoader): ComfyUI's/Black Forest Labs' names are converted with diffusers' own converter
  (``convert_flux2_transformer_checkpoint_to_diffusers``); diffusers' names load as they are. Weights go into a
  model built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``). ComfyUI's fp8
  files (``weight_scale``/``scale_weight`` per tensor) are dequantised to the compute dtype.
- Text encoder (CLIPLoader type flux2): the language model of Mistral Small 3.x (dev) or Qwen3 (Klein); only the
  layers up to the deepest one whose hidden states are read are built (30 of Mistral's 40, 27 of Qwen3-4B's 36).
- Tokenizer: ComfyUI's Mistral files carry Mistral's tekken vocabulary inside (``tekken_model``), which is used when
  present (converted with transformers' ``MistralConverter``); otherwise a ``tokenizer/`` folder beside the file (the
  ``tokenizer/`` folder of the FLUX.2 release). The tekken vocabulary (Apache-2.0) is ~15 MB, too big to ship.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, LatentFormat, TextEncoder
from .detect import (
    text_encoder_config,
    text_encoder_layout,
    transformer_config,
    transformer_layout,
)

log = logging.getLogger(__name__)

#: Flux.2's latent space as the MODEL sees it: the VAE wrapper already patchifies and normalises.
FLUX2_LATENT = LatentFormat(channels=128, downscale=16, scaling_factor=1.0, shift_factor=0.0)
#: ComfyUI's Flux.2 sampling without ModelSamplingFlux: flux-kind time shift 2.02.
DEFAULT_SHIFT = 2.02
TOKENIZER_FOLDERS = ("tokenizer", "flux2_tokenizer")
#: Hidden-state layers stacked into the text states (Flux2Pipeline / Flux2KleinPipeline defaults).
TEXT_LAYERS = {"mistral": (10, 20, 30), "qwen3": (9, 18, 27)}


def dequantize(state: dict[str, Any], dtype: Any, name: str) -> dict[str, Any]:
    """ComfyUI's fp8 files: each ``X.weight`` times its ``X.weight_scale`` (or ``X.scale_weight``) in ``dtype``; the
    quantisation markers (``comfy_quant``, ``input_scale``, ``scaled_fp8``) are dropped. Other files pass unchanged."""
    if any(k.endswith(".weight_scale_2") for k in state):
        raise UnknownModelError(f"{name} is NVFP4-quantised, which this version does not load; use the bf16 or "
                                "fp8 file")
    for suffix in (".weight_scale", ".scale_weight"):
        for key in [k for k in state if k.endswith(suffix)]:
            scale = state.pop(key)
            weight = key[: -len(suffix)] + ".weight"
            if weight in state:
                state[weight] = state[weight].to(dtype) * scale.to(dtype)
    for key in [k for k in state if k.endswith((".comfy_quant", ".input_scale", ".scale_input", "scaled_fp8"))]:
        del state[key]
    return state


def is_flux2_transformer(header: Header) -> bool:
    """``families.TRANSFORMER_FILES`` detector: whether a diffusion-model file holds a Flux.2 transformer."""
    return transformer_layout(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], header: Header, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Flux.2 transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import Flux2Transformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers,
    )

    from ..flow.loading import filled_model
    from ..flow.schedule import FlowSettings
    from ..loading import quiet_libraries

    found = transformer_layout(header.shapes)
    if found is None:
        raise UnknownModelError(f"{name} holds no Flux.2 transformer")
    prefix, layout = found
    config, (variant, *reasons) = transformer_config(header.shapes, prefix, layout)
    log.info("%s: flux2 %s: %s", name, variant, "; ".join(reasons))
    if prefix:
        state = strip_prefix(state, prefix)
    compute = dtype or torch.float32
    state = dequantize(state, compute, name)
    if layout == "comfyui":
        with quiet_libraries():
            state = convert_flux2_transformer_checkpoint_to_diffusers(state)
    transformer = filled_model(Flux2Transformer2DModel, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=f"flux2-{variant}", source=name,
                          latent=FLUX2_LATENT, family="flux2", flow=FlowSettings("flux", DEFAULT_SHIFT))


def load_flux2_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """``families.TRANSFORMER_FILES`` loader: MODEL from a Flux.2 transformer file (UNETLoader)."""
    from safetensors.torch import load_file

    return transformer_from_state(load_file(str(path)), header, name, weight_dtype, dtype)


def text_layers(arch: str, count: int) -> tuple[int, ...]:
    """The hidden-state layers stacked for ``arch`` with ``count`` layers: the released ones (n/4, n/2, 3n/4 of
    the full models), or the same fractions for a smaller (test) model."""
    layers = TEXT_LAYERS[arch]
    if count >= max(layers):
        return layers
    return (max(1, count // 4), max(1, count // 2), max(1, 3 * count // 4))


def text_encoder_from_state(state: dict[str, Any], header: Header, name: str, dtype: Any = None) -> tuple[Any, str]:
    """(``MistralModel`` or ``Qwen3Model`` with only the layers read, arch) from a text-encoder file's tensors."""
    import torch
    from accelerate import init_empty_weights
    from transformers import MistralConfig, MistralModel, Qwen3Config, Qwen3Model

    from ..flow.loading import fill
    from ..loading import quiet_libraries

    found = text_encoder_layout(header.shapes)
    if found is None:
        raise UnknownModelError(f"{name} is not a Flux.2 text encoder (no embed_tokens/layers.N.self_attn tensors of "
                                "a Mistral or Qwen3 language model); CLIPLoader type flux2 takes "
                                "mistral_3_small_flux2_*.safetensors (dev) or qwen_3_*.safetensors (Klein)")
    prefix, arch = found
    values = text_encoder_config(header.shapes, prefix, arch)
    layers = text_layers(arch, int(values["num_hidden_layers"]))
    values["num_hidden_layers"] = max(layers)
    compute = dtype or torch.float32
    keep = {f"layers.{i}." for i in range(max(layers))}
    inner: dict[str, Any] = {}
    for key in list(state):
        tensor = state.pop(key)
        if not key.startswith(prefix) or "vision" in key:
            continue
        short = key[len(prefix):]
        if short.startswith("layers.") and not any(short.startswith(k) for k in keep):
            continue
        inner[short] = tensor
    inner = dequantize(inner, compute, name)
    inner.pop("norm.weight", None)  # the final norm is not read (hidden states before it)
    config = MistralConfig(**values) if arch == "mistral" else Qwen3Config(**values)
    with quiet_libraries(), init_empty_weights():
        model = (MistralModel if arch == "mistral" else Qwen3Model)(config)
    inner["norm.weight"] = torch.ones(config.hidden_size)
    fill(model, inner, compute, name)
    model.flux2_layers = layers
    return model, arch


def tekken_tokenizer(data: Any) -> Any:
    """A fast tokenizer from Mistral's tekken vocabulary (the JSON bytes ComfyUI stores as ``tekken_model``), built
    with transformers' ``MistralConverter``; it pads on the left with ``<pad>`` as Mistral's release does."""
    import tempfile

    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral import MistralConverter

    raw = bytes(data.numpy().tobytes()) if hasattr(data, "numpy") else bytes(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tekken.json"
        path.write_bytes(raw)
        converted = MistralConverter(vocab_file=str(path)).converted()
    return PreTrainedTokenizerFast(tokenizer_object=converted, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left")


def folder_tokenizer(encoder_path: Path, arch: str) -> Any:
    """The tokenizer in a ``tokenizer/`` folder beside the text-encoder file (FileNotFoundError saying where)."""
    from transformers import AutoTokenizer

    folder = Path(encoder_path).parent
    for cand in (folder / n for n in TOKENIZER_FOLDERS):
        if (cand / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(cand), local_files_only=True)
    release = "FLUX.2-dev (Mistral Small 3.x)" if arch == "mistral" else "FLUX.2-klein (Qwen3)"
    raise FileNotFoundError(f"no tokenizer for {Path(encoder_path).name}: this file does not carry Mistral's tekken "
                            f"vocabulary (ComfyUI's mistral_3_small_flux2_*.safetensors do), so put the tokenizer/ "
                            f"folder of the {release} release (tokenizer.json, tokenizer_config.json) in {folder}")


def load_flux2_clip(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type flux2: the language model and its tokenizer."""
    from safetensors.torch import load_file

    from ..flow.loading import require_safetensors

    path = require_safetensors(path, name)
    header = read_header(path)
    found = text_encoder_layout(header.shapes)
    state = load_file(str(path))
    tekken = state.pop("tekken_model", None)
    if tekken is not None and found is not None and found[1] == "mistral":
        tokenizer = tekken_tokenizer(tekken)
    else:
        tokenizer = folder_tokenizer(path, found[1] if found else "mistral")
    model, arch = text_encoder_from_state(state, header, name, dtype)
    return TextEncoder(tokenizers=(tokenizer,), encoders=(model,), arch="flux2", options=(("flux2_text", arch),))


def load_flux2_clips(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry: CLIPLoader type flux2 takes one file."""
    return load_flux2_clip(paths[0], names[0], dtype)


__all__ = ["DEFAULT_SHIFT", "FLUX2_LATENT", "TEXT_LAYERS", "dequantize", "folder_tokenizer", "is_flux2_transformer",
           "load_flux2_clip", "load_flux2_clips", "load_flux2_transformer", "tekken_tokenizer", "text_encoder_from_state",
           "text_layers", "transformer_from_state"]
