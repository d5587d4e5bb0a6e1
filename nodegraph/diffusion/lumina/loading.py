"""Loading Z-Image's and Lumina 2's split files offline: the NextDiT transformer and the text encoder + tokenizer.

Weights go into models built on the meta device, tensor by tensor, in the compute dtype (``flow.loading.fill``).
CLIPLoader type ``lumina2`` takes either text encoder, as ComfyUI does, and tells them apart by their tensors:

- Qwen3-4B (Z-Image; ``self_attn.q_norm``): ``transformers.Qwen3Model``; the tokenizer (Qwen2's byte-level BPE)
  is not shipped: it is read from a ``qwen3_tokenizer``/``qwen_tokenizer``/``tokenizer`` folder beside the file.
- Gemma-2-2B (Lumina 2; ``post_feedforward_layernorm``): ``transformers.Gemma2Model``; the SentencePiece model is
  read from a ``gemma_tokenizer``/``tokenizer`` folder beside the file, else from the ``spiece_model`` tensor that
  ComfyUI's repackaged ``gemma_2_2b_fp16.safetensors`` carries.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import DiffusionModel, TextEncoder
from .detect import Found, detect_transformer, shipped_config

log = logging.getLogger(__name__)

#: ComfyUI's sampling defaults (supported_models.ZImage/Lumina2): discrete flow, multiplier 1.
DEFAULT_SHIFT = {"z_image": 3.0, "lumina2": 6.0}
ARCH = {"z_image": "z-image", "lumina2": "lumina2"}
#: Text positions the rotary tables cover (the released configs: 300 for Lumina 2, 1536 for Z-Image; the
#: frequencies of a position do not depend on the table length, so a longer table only admits longer prompts).
CAPTION_POSITIONS = 4096
QWEN3_TOKENIZER_FOLDERS = ("qwen3_tokenizer", "qwen_tokenizer", "tokenizer")
GEMMA_TOKENIZER_FOLDERS = ("gemma_tokenizer", "tokenizer")
#: Language-model prefixes of a text-encoder file: ComfyUI's/transformers' CausalLM names, or the bare model's.
_TE_PREFIXES = ("model.", "")


def is_lumina_transformer(header: Header) -> bool:
    """Whether a diffusion-model file holds a Z-Image or Lumina 2 transformer (``families.TRANSFORMER_FILES``)."""
    return detect_transformer(header.shapes) is not None


def transformer_from_state(state: dict[str, Any], found: Found, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from a Z-Image/Lumina 2 transformer's tensors (``state`` is emptied as the weights are placed)."""
    import torch
    from diffusers import Lumina2Transformer2DModel, ZImageTransformer2DModel

    from ..flow.loading import FLUX_LATENT, filled_model
    from ..flow.schedule import FlowSettings
    from ..fp8 import unscale_fp8
    from .convert import lumina2_to_diffusers, z_image_to_diffusers

    log.info("%s: %s: %s", name, found.family, "; ".join(found.reasons))
    p = found.prefix
    if p + "clip_text_pooled_proj.0.weight" in state:
        raise UnknownModelError(f"{name} is a NewBie model (Lumina 2 with a pooled CLIP input), which this version "
                                "does not run yet; use a Lumina-Image 2.0 or Z-Image file")
    if p:
        state = {k[len(p):]: state.pop(k) for k in list(state) if k.startswith(p)}
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    if found.layout == "comfyui":
        state = (z_image_to_diffusers if found.family == "z_image" else lumina2_to_diffusers)(state, found.config)
    cls = ZImageTransformer2DModel if found.family == "z_image" else Lumina2Transformer2DModel
    lens = list(found.config["axes_lens"])  # a longer rotary table on the text axis: ComfyUI has no prompt limit
    config = dict(found.config, axes_lens=[max(int(lens[0]), CAPTION_POSITIONS), *lens[1:]])
    transformer = filled_model(cls, config, state, name, compute, weight_dtype)
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=ARCH[found.family], source=name,
                          latent=FLUX_LATENT, family=found.family,
                          flow=FlowSettings("discrete", DEFAULT_SHIFT[found.family], 1.0))


def load_lumina_transformer(path: Path, header: Header, name: str, weight_dtype: str = "default",
                            dtype: Any = None) -> DiffusionModel:
    """MODEL from a Z-Image/Lumina 2 transformer file (UNETLoader; ``families.TRANSFORMER_FILES``)."""
    from safetensors.torch import load_file

    found = detect_transformer(header.shapes)
    if found is None:
        raise UnknownModelError(f"{name} holds no Z-Image or Lumina 2 transformer")
    return transformer_from_state(load_file(str(path)), found, name, weight_dtype, dtype)


def text_encoder_kind(shapes: dict[str, Any]) -> tuple[str, str] | None:
    """("qwen3" | "gemma2", prefix) of a text-encoder file CLIPLoader type lumina2 takes; None for other files."""
    for p in _TE_PREFIXES:
        if p + "embed_tokens.weight" not in shapes:
            continue
        if p + "layers.0.post_feedforward_layernorm.weight" in shapes and \
                p + "layers.0.self_attn.q_norm.weight" not in shapes:
            return "gemma2", p
        if p + "layers.0.self_attn.q_norm.weight" in shapes and p + "layers.0.self_attn.k_proj.bias" not in shapes:
            return "qwen3", p
    return None


def _count(shapes: dict[str, Any], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def text_encoder_config(shapes: dict[str, Any], kind: str, p: str) -> dict[str, Any]:
    """A Qwen3/Gemma2 config dict for the file's shapes on top of the shipped Qwen3-4B/Gemma-2-2B one (head width
    from q_norm for Qwen3; 256 for Gemma 2 when the widths allow, else 32, for scaled-down test models)."""
    config = shipped_config("qwen3_4b" if kind == "qwen3" else "gemma2_2b")
    vocab, hidden = shapes[p + "embed_tokens.weight"]
    q_rows = int(shapes[p + "layers.0.self_attn.q_proj.weight"][0])
    k_rows = int(shapes[p + "layers.0.self_attn.k_proj.weight"][0])
    if kind == "qwen3":
        head_dim = int(shapes[p + "layers.0.self_attn.q_norm.weight"][0])
    else:
        head_dim = 256 if q_rows % 256 == 0 and k_rows % 256 == 0 else 32
        config["query_pre_attn_scalar"] = head_dim
    layers = _count(shapes, p + "layers.")
    config.update(vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers, head_dim=head_dim,
                  num_attention_heads=q_rows // head_dim, num_key_value_heads=k_rows // head_dim,
                  intermediate_size=int(shapes[p + "layers.0.mlp.gate_proj.weight"][0]))
    if kind == "qwen3":
        config["max_window_layers"] = layers
    return config


def _folder(encoder_path: Path, names: tuple[str, ...], files: tuple[str, ...]) -> Path | None:
    here = Path(encoder_path).parent
    return next((here / n for n in names if any((here / n / f).is_file() for f in files)), None)


def qwen3_tokenizer(encoder_path: Path) -> Any:
    """Qwen3's tokenizer (Qwen2's byte-level BPE) from a folder beside the text-encoder file."""
    from transformers import Qwen2TokenizerFast

    folder = _folder(encoder_path, QWEN3_TOKENIZER_FOLDERS, ("tokenizer.json", "vocab.json"))
    if folder is None:
        raise FileNotFoundError(
            f"no Qwen3 tokenizer beside {Path(encoder_path).name}: put the tokenizer/ folder of the Z-Image (or "
            f"Qwen3-4B) release (vocab.json, merges.txt, tokenizer_config.json or tokenizer.json) in "
            f"{Path(encoder_path).parent} as {QWEN3_TOKENIZER_FOLDERS[0]}/")
    return Qwen2TokenizerFast.from_pretrained(str(folder), local_files_only=True)


def gemma_tokenizer(encoder_path: Path, spiece_model: Any = None) -> Any:
    """Gemma's SentencePiece tokenizer (start token added, as ComfyUI's) from a folder beside the text-encoder file,
    else from the file's own ``spiece_model`` tensor (``spiece_model``: that uint8 tensor or None)."""
    from transformers import GemmaTokenizer

    folder = _folder(encoder_path, GEMMA_TOKENIZER_FOLDERS, ("tokenizer.json", "tokenizer.model"))
    if folder is not None:
        return GemmaTokenizer.from_pretrained(str(folder), local_files_only=True, add_bos_token=True)
    if spiece_model is None:
        raise FileNotFoundError(
            f"no Gemma tokenizer in or beside {Path(encoder_path).name}: use ComfyUI's gemma_2_2b_fp16.safetensors "
            f"(it carries the tokenizer), or put the tokenizer/ folder of the Lumina-Image 2.0 (or gemma-2-2b) "
            f"release (tokenizer.model or tokenizer.json) in {Path(encoder_path).parent} as "
            f"{GEMMA_TOKENIZER_FOLDERS[0]}/")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(spiece_model.numpy().tobytes())
        return GemmaTokenizer.from_pretrained(tmp, local_files_only=True, add_bos_token=True)


def text_encoder_from_state(state: dict[str, Any], kind: str, prefix: str, shapes: dict[str, Any], name: str,
                            dtype: Any = None) -> Any:
    """``Qwen3Model`` or ``Gemma2Model`` from a text-encoder file's tensors (``state`` is emptied as placed)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import Gemma2Config, Gemma2Model, Qwen3Config, Qwen3Model

    from ..flow.loading import fill
    from ..loading import quiet_libraries
    from ..fp8 import unscale_fp8

    config = text_encoder_config(shapes, kind, prefix)
    state = strip_prefix(state, prefix)
    state = unscale_fp8(state, dtype or torch.float32)
    with quiet_libraries(), init_empty_weights():
        model = Qwen3Model(Qwen3Config(**config)) if kind == "qwen3" else Gemma2Model(Gemma2Config(**config))
    fill(model, state, dtype or torch.float32, name)
    return model


def load_lumina_clip(path: Path, name: str, dtype: Any = None) -> TextEncoder:
    """CLIP for CLIPLoader type lumina2: Qwen3-4B (Z-Image) or Gemma-2-2B (Lumina 2), whichever the file holds."""
    from safetensors.torch import load_file

    from ..flow.loading import require_safetensors

    path = require_safetensors(path, name)
    header = read_header(path)
    found = text_encoder_kind(header.shapes)
    if found is None:
        raise UnknownModelError(f"{name} is neither Qwen3 (Z-Image) nor Gemma 2 (Lumina 2), the text encoders "
                                "CLIPLoader type lumina2 loads; pick qwen_3_4b or gemma_2_2b, or another type")
    kind, prefix = found
    state = load_file(str(path))
    spiece = state.pop("spiece_model", None)
    tokenizer = qwen3_tokenizer(path) if kind == "qwen3" else gemma_tokenizer(path, spiece)
    model = text_encoder_from_state(state, kind, prefix, header.shapes, name, dtype)
    if len(tokenizer) > int(model.config.vocab_size):
        raise UnknownModelError(f"{name}: its tokenizer has {len(tokenizer):,} tokens but the model only "
                                f"{model.config.vocab_size:,}; the tokenizer folder beside it belongs to another "
                                "model")
    arch = "z_image" if kind == "qwen3" else "lumina2"
    return TextEncoder(tokenizers=(tokenizer,), encoders=(model,), arch=arch)


def load_lumina_clips(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """``families.CLIP_LOADERS`` entry: CLIPLoader type lumina2 takes one file."""
    return load_lumina_clip(paths[0], names[0], dtype)


__all__ = ["ARCH", "DEFAULT_SHIFT", "gemma_tokenizer", "is_lumina_transformer", "load_lumina_clip",
           "load_lumina_clips", "load_lumina_transformer", "qwen3_tokenizer", "text_encoder_config",
           "text_encoder_from_state", "text_encoder_kind", "transformer_from_state"]
