"""Build the models and tokenizers of a single-file (LDM layout) checkpoint in memory — nothing touches the disk.

Configs are dicts (from ``Detected.files``, the shipped configs, or derived from shapes); weights are mapped to
diffusers names with ``diffusers.loaders.single_file_utils``' converters and placed with the same
``load_model_dict_into_meta`` that ``from_single_file`` uses, so results are identical to diffusers' own single-file
loading without a config folder on disk. A file's header can therefore never choose a path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .detect import UnknownModelError

#: LDM prefixes of the OpenAI CLIP text encoder (SD1, and SDXL's first encoder).
_LDM_CLIP = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
#: Tokenizer settings taken from a stored ``tokenizer_config.json`` (everything else there is ignored).
_TOKENIZER_SETTINGS = ("bos_token", "eos_token", "pad_token", "unk_token", "model_max_length",
                       "clean_up_tokenization_spaces")


def materialise(factory: Callable[[Any], Any], config: Any, weights: dict[str, Any], dtype: Any, what: str) -> Any:
    """Create a model from ``config`` without allocating weights, then fill it from ``weights`` (cast to ``dtype``;
    None keeps the model's float32). Raises ``UnknownModelError`` when weights are missing."""
    from accelerate import init_empty_weights
    from diffusers.models.model_loading_utils import load_model_dict_into_meta

    with init_empty_weights():
        model = factory(config)
    try:
        load_model_dict_into_meta(model, weights, dtype=dtype)
    except ValueError as exc:  # a shape that does not fit the config
        raise UnknownModelError(f"{what} does not match its config ({exc})") from None
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if missing:
        raise UnknownModelError(f"{what} lacks {len(missing)} weights (e.g. {missing[0]}); the file is incomplete "
                                "or not the architecture its header says")
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def unet(state: dict[str, Any], config: dict[str, Any], dtype: Any, name: str) -> Any:
    """The UNet2DConditionModel of an LDM state dict (``model.diffusion_model.*``)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return materialise(UNet2DConditionModel.from_config, config, convert_ldm_unet_checkpoint(state, config), dtype,
                       f"{name}: its UNet")


def vae(state: dict[str, Any], config: dict[str, Any], name: str) -> Any:
    """The AutoencoderKL (always float32) of an LDM state dict (``first_stage_model.*``, ``vae.*`` or bare keys)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return materialise(AutoencoderKL.from_config, config, convert_ldm_vae_checkpoint(state, config), None,
                       f"{name}: its VAE")


def text_encoder(state: dict[str, Any], component: str, config: dict[str, Any], dtype: Any, name: str) -> Any:
    """``text_encoder`` (OpenAI CLIP in LDM naming, or SD2's OpenCLIP) or ``text_encoder_2`` (SDXL's OpenCLIP)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cls = (CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in config.get("architectures", [])
           else CLIPTextModel)
    what = f"{name}: its {component}"
    keys = list(state)
    if component == "text_encoder" and any(k.startswith(_LDM_CLIP) for k in keys):
        convert: Callable[[Any], dict[str, Any]] = lambda model: convert_ldm_clip_checkpoint(state)
    else:
        prefix = "cond_stage_model.model." if component == "text_encoder" else next(
            (p for p in ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.")
             if any(k.startswith(p + "transformer.") for k in keys)), "conditioner.embedders.1.model.")
        convert = lambda model: convert_open_clip_checkpoint(model, state, prefix=prefix)
    from accelerate import init_empty_weights

    cfg = cls.config_class.from_dict(config)
    with init_empty_weights():
        model = cls(cfg)  # the converters need the model's layout (projection size, flattened text_model)
    weights = convert(model)
    if not weights:
        raise UnknownModelError(f"{what} has no weights in the file")
    if not hasattr(model, "text_model"):  # CLIPTextModel is flat in recent transformers
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return materialise(lambda _cfg: model, cfg, weights, dtype, what)


def tokenizer(files: dict[str, str], component: str, name: str) -> Any | None:
    """A CLIPTokenizer from the vocabulary a header carries (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``)
    with the settings of its ``tokenizer_config.json``; None when the header carries no vocabulary."""
    from transformers import CLIPTokenizer

    settings = json.loads(files.get(f"{component}/tokenizer_config.json", "{}"))
    if settings.get("tokenizer_class", "CLIPTokenizer") != "CLIPTokenizer":
        raise UnknownModelError(f"{name}: its {component} is a {settings['tokenizer_class']!r}; only CLIP tokenizers "
                                "load from a single file — use the diffusers folder instead")
    try:
        if f"{component}/tokenizer.json" in files:
            model = json.loads(files[f"{component}/tokenizer.json"])["model"]
            vocab, merges = model["vocab"], model["merges"]
        elif f"{component}/vocab.json" in files and f"{component}/merges.txt" in files:
            vocab = json.loads(files[f"{component}/vocab.json"])
            merges = [line for line in files[f"{component}/merges.txt"].splitlines()
                      if line and not line.startswith("#version")]
        else:
            return None
        pairs = [tuple(m) if isinstance(m, list) else tuple(str(m).split(" ", 1)) for m in merges]
        if not isinstance(vocab, dict) or any(len(p) != 2 for p in pairs):
            raise ValueError("the vocabulary must map tokens to ids and each merge must be a pair")
        kw = {k: settings[k] for k in _TOKENIZER_SETTINGS if k in settings}
        return CLIPTokenizer(vocab=vocab, merges=pairs, **kw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnknownModelError(f"{name}: the {component} vocabulary in its header is damaged ({exc}); re-export "
                                "the model") from None
