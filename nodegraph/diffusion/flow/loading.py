"""Loading split files of flow-matching families offline: diffusion transformers, text encoders, their tokenizers.

- Weights are placed into a model built on the meta device (``accelerate.init_empty_weights``), tensor by tensor,
  each removed from the loaded dict as it is placed: a 12B transformer needs its own size in RAM, not twice it.
- ``weight_dtype`` (UNETLoader): "default" keeps the compute dtype; "fp8_e4m3fn"/"fp8_e4m3fn_fast"/"fp8_e5m2" store
  the weights in float8 and compute in the device dtype (diffusers' layerwise casting), where torch has float8.
- Text encoders: CLIP-L (``text_model.*``) and T5 (``encoder.block.*``) files in ComfyUI's/transformers' layout,
  configs from the shipped ones with sizes read from the shapes. CLIP uses the shipped CLIP vocabulary, T5 the
  shipped T5 v1.1 vocabulary (or a ``t5_tokenizer``/``tokenizer`` folder beside the T5 file) — see ``t5_tokenizer``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError, read_header
from ..types import DiffusionModel, LatentFormat, TextEncoder
from .detect import (
    FLUX_CONFIGS,
    detect_transformer,
    encoder_prefix,
    shipped_config,
    text_encoder_kind,
)
from .schedule import FlowSettings

log = logging.getLogger(__name__)

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
#: Flux.1's latent space (its 16-channel VAE): scale and shift as the VAE config states them.
FLUX_LATENT = LatentFormat(channels=16, downscale=8, scaling_factor=0.3611, shift_factor=0.1159)
#: Default noise shift of each Flux variant without ModelSamplingFlux (ComfyUI's model configs).
_DEFAULT_SHIFT = {"dev": 1.15, "fill": 1.15, "control": 1.15, "schnell": 1.0}


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors of ``state`` named under ``prefix``, renamed without it (popped from ``state``)."""
    return {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}


def fill(model: Any, state: dict[str, Any], dtype: Any, what: str) -> Any:
    """Place ``state``'s tensors (cast to ``dtype``) into meta-device ``model``, emptying ``state`` as it goes."""
    from accelerate.utils import set_module_tensor_to_device

    expected = dict(model.named_parameters())
    expected.update(dict(model.named_buffers()))
    for name in list(state):
        tensor = state.pop(name)
        if name not in expected:
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UnknownModelError(f"{what}: {name} is {tuple(tensor.shape)} but the model expects "
                                    f"{tuple(expected[name].shape)}")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        # dtype given: accelerate would otherwise cast to the meta parameter's float32
        set_module_tensor_to_device(model, name, "cpu", value=tensor, dtype=tensor.dtype)
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if missing:
        raise UnknownModelError(f"{what} lacks {len(missing)} weights (e.g. {missing[0]}); the file is incomplete or "
                                "not the architecture it was detected as")
    return model.eval()


def _float8(weight_dtype: str) -> Any:
    import torch

    name = "float8_e5m2" if weight_dtype == "fp8_e5m2" else "float8_e4m3fn"
    dtype = getattr(torch, name, None)
    if dtype is None:
        raise ValueError(f"weight_dtype {weight_dtype!r} needs torch with {name}; this torch has none, use default")
    return dtype


def filled_model(cls: Any, config: dict[str, Any], state: dict[str, Any], name: str, dtype: Any = None,
                 weight_dtype: str = "default") -> Any:
    """``cls.from_config(config)`` built on the meta device, filled from ``state`` in ``dtype`` (None: float32) and
    stored in float8 when ``weight_dtype`` names one (``state`` is emptied as the weights are placed)."""
    import torch
    from accelerate import init_empty_weights

    from ..loading import quiet_libraries

    with quiet_libraries(), init_empty_weights():
        model = cls.from_config(config)
    compute = dtype or torch.float32
    fill(model, state, compute, name)
    if weight_dtype != "default":
        model.enable_layerwise_casting(storage_dtype=_float8(weight_dtype), compute_dtype=compute)
    return model


def load_t5xxl_clip(paths: list[Path], names: list[str], dtype: Any, arch: str, family: str,
                    reads: str) -> TextEncoder:
    """CLIP of one T5-XXL file (and the T5 v1.1 tokenizer) for CLIPLoader type ``arch``; other files are refused,
    naming ``family`` and the files it ``reads``."""
    if len(paths) != 1:
        raise ValueError(f"type {arch} takes one text encoder file (T5-XXL, e.g. t5xxl_fp16.safetensors); use "
                         "CLIPLoader")
    kind, model = load_text_encoder(paths[0], names[0], dtype)
    if kind != "t5xxl":
        raise UnknownModelError(f"{names[0]} is a {kind} text encoder, not T5-XXL; {family} (type {arch}) reads "
                                f"{reads}")
    return TextEncoder(tokenizers=(t5_tokenizer(Path(paths[0])),), encoders=(model,), arch=arch)


def require_safetensors(path: Path, name: str, what: str = "text encoders") -> Path:
    """``path`` as a Path; UnknownModelError naming ``name`` (and ``what`` loads from where) unless .safetensors."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise UnknownModelError(f"{name}: {what} load from .safetensors files only")
    return path


def load_transformer(path: Path, name: str, weight_dtype: str = "default", dtype: Any = None) -> DiffusionModel:
    """MODEL from a diffusion-transformer file (Flux.1, any layout), in ``dtype`` (None: float32)."""
    from safetensors.torch import load_file

    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    path = require_safetensors(path, name, "diffusion models")
    header = read_header(path)
    from ..families import transformer_loader

    family_loader = transformer_loader(header)  # SD UNets, Qwen-Image, Wan, LTX, …: families.TRANSFORMER_FILES
    if family_loader is not None:
        return family_loader(path, header, name, weight_dtype, dtype)
    found = detect_transformer(header)
    return transformer_from_state(load_file(str(path)), found, name, weight_dtype, dtype)


def transformer_from_state(state: dict[str, Any], found: Any, name: str, weight_dtype: str = "default",
                           dtype: Any = None) -> DiffusionModel:
    """MODEL from the tensors of a detected transformer (``state`` is emptied as the weights are placed)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    from ..loading import quiet_libraries
    from .convert import to_diffusers

    from . import sd3

    from ..fp8 import unscale_fp8

    log.info("%s: %s (%s layout): %s", name, found.arch, found.layout, "; ".join(found.reasons))
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)  # ComfyUI's fp8_scaled files (flux1-dev-fp8-scaled, sd3.5 fp8)
    if found.prefix:
        state = {k[len(found.prefix):]: state.pop(k) for k in list(state) if k.startswith(found.prefix)}
    if found.family == "sd3":
        if found.layout != "diffusers":
            state = sd3.to_diffusers(state)
        transformer = sd3.build_transformer(found.config)
    elif found.family == "chroma":
        from . import chroma

        if found.layout != "diffusers":
            state = to_diffusers(state)
        transformer = chroma.build_transformer(found.config)
    else:
        if found.layout != "diffusers":
            state = to_diffusers(state)
        with quiet_libraries(), init_empty_weights():
            transformer = FluxTransformer2DModel.from_config(found.config)
    fill(transformer, state, compute, name)
    if weight_dtype != "default":
        transformer.enable_layerwise_casting(storage_dtype=_float8(weight_dtype), compute_dtype=compute)
    if found.family == "sd3":
        return DiffusionModel(unet=transformer, scheduler_config={}, arch=found.arch, source=name,
                              latent=sd3.SD3_LATENT, family="sd3", flow=sd3.SD3_FLOW)
    if found.family == "chroma":
        return DiffusionModel(unet=transformer, scheduler_config={}, arch="chroma", source=name, latent=FLUX_LATENT,
                              family="chroma", flow=FlowSettings("flux", 1.15))
    flow = FlowSettings("flux", _DEFAULT_SHIFT.get(found.variant, 1.15))
    return DiffusionModel(unet=transformer, scheduler_config={}, arch=found.arch, source=name, latent=FLUX_LATENT,
                          family="flux", flow=flow)


def _clip_config(shapes: dict[str, Any], p: str) -> dict[str, Any]:
    vocab, hidden = shapes[p + "embeddings.token_embedding.weight"]
    layers = {int(k[len(p + "encoder.layers."):].split(".")[0]) for k in shapes if k.startswith(p + "encoder.layers.")}
    return dict(shipped_config("clip_l"), vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers),
                num_attention_heads=max(1, hidden // 64), projection_dim=hidden,
                intermediate_size=shapes[p + "encoder.layers.0.mlp.fc1.weight"][0],
                max_position_embeddings=shapes[p + "embeddings.position_embedding.weight"][0])


def _clip_g_config(shapes: dict[str, Any]) -> dict[str, Any]:
    """CLIP-G's config (shipped ``configs/sd3/clip_g.json``) with the sizes of the file (``text_model.*`` names)."""
    from .sd3 import sd3_config

    p = "text_model." if "text_model.embeddings.token_embedding.weight" in shapes else ""
    base = _clip_config(shapes, p)
    proj = shapes.get("text_projection.weight")
    return dict(sd3_config("clip_g"), **{k: base[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                               "num_attention_heads", "intermediate_size",
                                                               "max_position_embeddings")},
                projection_dim=int(proj[0]) if proj else base["hidden_size"])


def _t5_config(shapes: dict[str, Any], p: str) -> dict[str, Any]:
    emb = shapes.get(p + "shared.weight") or shapes[p + "encoder.embed_tokens.weight"]
    block = p + "encoder.block.0.layer."
    buckets, heads = shapes[block + "0.SelfAttention.relative_attention_bias.weight"]
    gated = block + "1.DenseReluDense.wi_0.weight" in shapes
    d_ff = shapes[block + ("1.DenseReluDense.wi_0.weight" if gated else "1.DenseReluDense.wi.weight")][0]
    layers = {int(k[len(p + "encoder.block."):].split(".")[0]) for k in shapes if k.startswith(p + "encoder.block.")}
    return dict(shipped_config("t5xxl"), vocab_size=emb[0], d_model=emb[1], num_heads=heads,
                d_kv=shapes[block + "0.SelfAttention.q.weight"][0] // heads, d_ff=d_ff, num_layers=len(layers),
                relative_attention_num_buckets=buckets, feed_forward_proj="gated-gelu" if gated else "relu")


def load_text_encoder(path: Path, name: str, dtype: Any = None, kind: str | None = None) -> tuple[str, Any]:
    """(kind, model) from a text-encoder file: ("clip_l", CLIPTextModel), ("clip_g", CLIPTextModelWithProjection)
    or ("t5xxl", T5EncoderModel); ``kind`` overrides the detected CLIP kind."""
    from safetensors.torch import load_file

    path = require_safetensors(path, name)
    header = read_header(path)
    return text_encoder_from_state(load_file(str(path)), header, name, dtype, kind)


def clip_kinds(paths: list[Path], names: list[str]) -> list[str]:
    """The kind of each text-encoder file of an SD3 set: CLIP-G is 1280 wide, or the wider of two CLIP files."""
    for path, name in zip(paths, names):
        require_safetensors(path, name)
    headers = [read_header(Path(p)) for p in paths]
    kinds = [text_encoder_kind(h) for h in headers]
    clips = [i for i, k in enumerate(kinds) if k != "t5xxl"]
    if len(clips) == 2 and kinds[clips[0]] == kinds[clips[1]]:
        widths = [headers[i].shapes[encoder_prefix(headers[i]) + "embeddings.token_embedding.weight"][1]
                  for i in clips]
        if widths[0] != widths[1]:
            wide = clips[0] if widths[0] > widths[1] else clips[1]
            for i in clips:
                kinds[i] = "clip_g" if i == wide else "clip_l"
    return kinds


def text_encoder_from_state(state: dict[str, Any], header: Any, name: str, dtype: Any = None,
                            kind: str | None = None) -> tuple[str, Any]:
    """(kind, model) from a text encoder's tensors (``header``: their shapes, for detection and the config);
    ``kind`` ("clip_l"/"clip_g") overrides the CLIP kind read from the width."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ..fp8 import unscale_fp8
    from ..loading import quiet_libraries

    state = unscale_fp8(state, dtype)  # t5xxl_fp8_e4m3fn_scaled and friends
    found, prefix = text_encoder_kind(header), encoder_prefix(header)
    kind = kind if kind and found != "t5xxl" else found
    if kind == "clip_g" and prefix.endswith("text_model."):
        prefix = prefix[:-len("text_model.")]  # keep text_model. (CLIPTextModelWithProjection's names)
    shapes = {k[len(prefix):]: v for k, v in header.shapes.items() if k.startswith(prefix)}
    state = strip_prefix(state, prefix)
    with quiet_libraries(), init_empty_weights():
        if kind == "t5xxl":
            model = T5EncoderModel(T5Config(**_t5_config(shapes, "")))
            shared = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
            state["shared.weight"] = shared
            state.pop("encoder.embed_tokens.weight", None)
        elif kind == "clip_g":
            model = CLIPTextModelWithProjection(CLIPTextConfig(**_clip_g_config(shapes)))
        else:
            model = CLIPTextModel(CLIPTextConfig(**_clip_config(shapes, "")))
    if kind == "t5xxl":
        model.encoder.embed_tokens = model.shared  # tied: one tensor
    fill(model, state, dtype, name)
    return kind, model


def t5_tokenizer(encoder_path: Path | None = None) -> Any:
    """T5's tokenizer, offline: a ``t5_tokenizer``/``tokenizer`` folder beside the T5 file when there is one (a
    fine-tuned vocabulary), else the shipped T5 v1.1 vocabulary (``configs/flux/t5_tokenizer/tokenizer.json.gz``)."""
    import gzip

    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    if encoder_path is not None:
        folder = Path(encoder_path).parent
        for cand in (folder / "t5_tokenizer", folder / "tokenizer"):
            if (cand / "tokenizer.json").is_file() or (cand / "spiece.model").is_file():
                return T5TokenizerFast.from_pretrained(str(cand), local_files_only=True, legacy=True)
    data = gzip.decompress((FLUX_CONFIGS / "t5_tokenizer" / "tokenizer.json.gz").read_bytes()).decode("utf-8")
    return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(data), eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0, model_max_length=512)


def load_clip(paths: list[Path], names: list[str], clip_type: str, dtype: Any = None) -> TextEncoder:
    """CLIP for Triple/DualCLIPLoader/CLIPLoader: "flux" (CLIP-L + T5), "sd3" (any of CLIP-L, CLIP-G, T5) or
    "stable_diffusion" (one CLIP-L file)."""
    from ..loading import clip_tokenizer
    from .sd3_text import sd3_clip

    from ..families import CLIP_LOADERS, clip_file_loader, lookup

    family_loader = lookup(CLIP_LOADERS, clip_type)  # SDXL, Wan, LTX, Qwen-Image, …: families.CLIP_LOADERS
    if family_loader is not None:
        return family_loader(paths, names, dtype)
    if clip_type == "stable_diffusion" and len(paths) == 1 and Path(paths[0]).suffix.lower() == ".safetensors":
        by_content = clip_file_loader(read_header(Path(paths[0])).shapes)  # e.g. AuraFlow's Pile-T5-XL
        if by_content is not None:
            return by_content(paths[0], names[0], dtype)
    loaded = {}
    kinds = clip_kinds(paths, names) if clip_type == "sd3" else [None] * len(paths)
    for path, name, wanted in zip(paths, names, kinds):
        kind, model = load_text_encoder(path, name, dtype, wanted)
        if kind in loaded:
            raise ValueError(f"{' and '.join(names)} hold two {kind} encoders; type {clip_type} takes one file of each "
                             "kind (" + ("CLIP-L, CLIP-G, T5-XXL" if clip_type == "sd3" else "CLIP-L and T5-XXL") + ")")
        loaded[kind] = (model, path)
    if clip_type == "sd3":
        return sd3_clip(loaded, list(names))
    if clip_type == "chroma":
        from .chroma import chroma_clip

        return chroma_clip(loaded)
    if clip_type == "stable_diffusion":
        if "clip_l" not in loaded:
            raise ValueError(f"{names[0]} is a T5 encoder; type stable_diffusion takes a CLIP text encoder file")
        return TextEncoder(tokenizers=(clip_tokenizer(),), encoders=(loaded["clip_l"][0],), arch="sd1")
    if "clip_g" in loaded:
        raise ValueError(f"type {clip_type} takes CLIP-L and T5-XXL; CLIP-G is SD3's (use type sd3)")
    if set(loaded) != {"clip_l", "t5xxl"}:
        raise ValueError(f"type flux takes a CLIP-L and a T5-XXL file; got {', '.join(sorted(loaded))}")
    t5, t5_path = loaded["t5xxl"]
    return TextEncoder(tokenizers=(clip_tokenizer(), t5_tokenizer(t5_path)), encoders=(loaded["clip_l"][0], t5),
                       arch="flux")


def vae_overrides(state: dict[str, Any]) -> dict[str, Any]:
    """Config changes for a 16-channel VAE file in LDM layout (Flux's ``ae.safetensors``: no quant convs)."""
    keys = [k for k in state if k.endswith("decoder.conv_in.weight")]
    if not keys or int(state[keys[0]].shape[1]) != 16:
        return {}
    quant = any(k.endswith("quant_conv.weight") for k in state)
    return {"use_quant_conv": quant, "use_post_quant_conv": quant, "scaling_factor": FLUX_LATENT.scaling_factor,
            "shift_factor": FLUX_LATENT.shift_factor}


__all__ = ["FLUX_LATENT", "WEIGHT_DTYPES", "clip_kinds", "fill", "filled_model", "load_clip", "load_t5xxl_clip",
           "load_text_encoder", "load_transformer", "t5_tokenizer", "text_encoder_from_state",
           "transformer_from_state", "vae_overrides"]
