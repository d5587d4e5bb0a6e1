"""Finding and loading checkpoints, VAEs, LoRAs and upscale models from the models folder — offline.

Formats: a diffusers folder (``model_index.json``), or a single ``.safetensors`` file in the original LDM layout
(SD1.x, SD2.x, SDXL, SDXL refiner, or a nodegraph export), loaded with the configs shipped in
``nodegraph/diffusion/configs`` — nothing is fetched from the network. Pickle files (.ckpt/.pt/.pth/.bin) are refused
unless ``EngineConfig.allow_unsafe_pickle`` is set, because unpickling can run arbitrary code.

API used by the nodes: ``checkpoint_names/vae_names/lora_names/upscale_model_names(config)`` (combo options),
``resolve_model(config, folder, name) -> Path``, ``file_fingerprint(path)``, ``load_checkpoint(path, config, name=,
dtype=) -> Checkpoint``, ``load_vae(path, config, name=) -> VAEModel``, ``clip_tokenizer(pad_token)``.
``Checkpoint.model.arch`` is sd1 | sd2 | sdxl | sdxl_refiner | embedded | custom; only the sdxl ones need pooled
text and size conditioning. Everything loads on the CPU; the DeviceManager moves it when used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodegraph.config import EngineConfig, safe_join
from nodegraph.models import folders
from nodegraph.models.folders import PICKLE_EXTENSIONS

from .detect import CLIP_VOCAB_DIR, CONFIGS_DIR, Detected, UnknownModelError, arch_of, detect, read_header
from .types import Checkpoint, DiffusionModel, LatentFormat, TextEncoder, VAEModel

log = logging.getLogger(__name__)

EMBEDDED_NAME = "nodegraph-shapes-v1"
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "embedded" / "shapes-v1"


class UnsafeModelError(ValueError):
    """A pickle-format model file was refused."""


# ---- names for the combos ------------------------------------------------------------------------------------------

def checkpoint_names(config: EngineConfig | None) -> list[str]:
    """The embedded default model first, then files and diffusers folders under models/checkpoints."""
    return [EMBEDDED_NAME] + (folders.list_models(config, "checkpoints") if config else [])


def vae_names(config: EngineConfig | None) -> list[str]:
    """VAE files and folders (a diffusers AutoencoderKL folder has config.json) under models/vae."""
    return folders.list_models(config, "vae") if config else []


def lora_names(config: EngineConfig | None) -> list[str]:
    """LoRA files under models/loras."""
    return folders.list_models(config, "loras") if config else []


def upscale_model_names(config: EngineConfig | None) -> list[str]:
    """Upscale model files under models/upscale_models."""
    return folders.list_models(config, "upscale_models") if config else []


# ---- resolving and checking files --------------------------------------------------------------------------------

def resolve_model(config: EngineConfig, folder: str, name: str) -> Path:
    """The path of model ``name`` in models/<folder> (the embedded default for checkpoints); never leaves it."""
    if folder == "checkpoints" and name == EMBEDDED_NAME:
        if not (EMBEDDED_DIR / "model_index.json").exists():
            raise FileNotFoundError(f"the embedded model {EMBEDDED_NAME!r} is not installed ({EMBEDDED_DIR} has no "
                                    "model_index.json); reinstall nodegraph or choose another checkpoint")
        return EMBEDDED_DIR
    if folder == "controlnet":  # the embedded model's Canny ControlNet
        from .controlnet_files import EMBEDDED_CONTROLNET_DIR, EMBEDDED_CONTROLNET_NAME

        if name == EMBEDDED_CONTROLNET_NAME:
            return EMBEDDED_CONTROLNET_DIR
    path = safe_join(config.model_dir(folder), name)
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is not in {config.model_dir(folder)}; copy the file there or pick one "
                                "from the list")
    return path


def file_fingerprint(path: Path) -> tuple[Any, ...]:
    """(path, size, mtime) of a file, or of every file in a folder: changes when the model on disk changes."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return (str(path),) + tuple((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                                    for p in files)
    if path.is_file():
        st = path.stat()
        return (str(path), st.st_size, st.st_mtime_ns)
    return (str(path), "missing")


def _allowed(config: EngineConfig | None) -> bool:
    return bool(config is not None and config.allow_unsafe_pickle)


def check_loadable(path: Path, allow_pickle: bool = False) -> None:
    """Refuse pickle files unless allowed, and anything that is not .safetensors or a folder."""
    suffix = path.suffix.lower()
    if path.is_file() and suffix in PICKLE_EXTENSIONS:
        if not allow_pickle:
            raise UnsafeModelError(
                f"{path.name} is a pickle file ({suffix}); loading pickles can run arbitrary code hidden in the "
                "file. Convert it to .safetensors, or start nodegraph with --allow-unsafe-pickle if you trust it")
        return
    if path.is_file() and suffix != ".safetensors":
        raise UnknownModelError(f"{path.name} is not a model file this engine reads; use .safetensors or a "
                                "diffusers folder")


def load_state_dict(path: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """All tensors of a .safetensors file (or, when allowed, a pickle checkpoint's state dict)."""
    path = Path(path)
    check_loadable(path, allow_pickle)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=False)  # allowed explicitly by the user
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UnknownModelError(f"{path.name} does not hold a state dict (found {type(state).__name__})")
    return state


def _header_of(path: Path, state: dict[str, Any] | None):
    from .detect import Header

    if path.suffix.lower() == ".safetensors":
        return read_header(path)
    return Header(path, {k: tuple(v.shape) for k, v in (state or {}).items() if hasattr(v, "shape")}, {})


# ---- tokenizers ----------------------------------------------------------------------------------------------------

def clip_tokenizer(pad_token: str = "<|endoftext|>", max_length: int = 77) -> Any:
    """A CLIPTokenizer over the shipped CLIP BPE vocabulary (SD1/SDXL pad with <|endoftext|>, OpenCLIP with '!')."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CLIP_VOCAB_DIR), pad_token=pad_token, model_max_length=max_length)


def _tokenizer(files: dict[str, str], _folder: Any, component: str, name: str = "checkpoint") -> Any:
    """The tokenizer of ``component``: the vocabulary in ``files``, else the shipped CLIP vocabulary.

    ``_folder`` is never read (configs come only from ``files``); it stays for callers of the older signature.
    """
    from . import single_file

    found = single_file.tokenizer(files, component, name)
    if found is not None:
        return found
    settings = json.loads(files.get(f"{component}/tokenizer_config.json", "{}"))
    return clip_tokenizer(settings.get("pad_token", "<|endoftext|>"))


# ---- checkpoints ---------------------------------------------------------------------------------------------------

@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block, keep diffusers/transformers from printing load progress bars and advisory warnings.

    The libraries' verbosity and progress-bar switches are process-wide: they are restored on exit, so a host that
    embeds nodegraph keeps its own logging settings.
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
             for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in saved:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def load_checkpoint(path: Path, config: EngineConfig | None = None, *, name: str | None = None,
                    dtype: Any = None) -> Checkpoint:
    """Load MODEL, CLIP and VAE from a diffusers folder or a single file (offline); models stay on the CPU.

    ``dtype`` (e.g. torch.float16 when sampling on a GPU) applies to the UNet and text encoders; None keeps float32.
    The VAE is always float32 (SDXL's overflows in float16; it is small).
    """
    path = Path(path)
    name = name or path.name
    with quiet_libraries():
        if path.is_dir():
            return _load_folder(path, name, dtype, _allowed(config))
        return _load_file(path, config, name, dtype)


def _load_file(path: Path, config: EngineConfig | None, name: str, dtype: Any) -> Checkpoint:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {name!r} not found at {path}")
    check_loadable(path, _allowed(config))
    if path.suffix.lower() == ".safetensors":  # identify it from the header before reading gigabytes
        from .families import checkpoint

        family = checkpoint(path, name, dtype)  # all-in-one Flux, SD3, LTX-Video, … files: families.CHECKPOINT_FILES
        if family is not None:
            return family
        found = detect(path, read_header(path))
        state = load_state_dict(path)
    else:
        state = load_state_dict(path, _allowed(config))
        found = detect(path, _header_of(path, state))
    return _load_single(state, found, name, dtype)


#: What a diffusers folder's model_index.json may name per component: (library, base class name) pairs.
_COMPONENT_BASES = {
    "unet": (("diffusers", "ModelMixin"),), "vae": (("diffusers", "ModelMixin"),),
    "text_encoder": (("transformers", "PreTrainedModel"),), "text_encoder_2": (("transformers", "PreTrainedModel"),),
    "tokenizer": (("transformers", "PreTrainedTokenizerBase"),),
    "tokenizer_2": (("transformers", "PreTrainedTokenizerBase"),),
    "scheduler": (("diffusers", "SchedulerMixin"),),
}


def _component_class(index: dict[str, Any], name: str, where: str = "") -> Any:
    """The class model_index.json names for ``name``: only a model/tokenizer/scheduler class of diffusers or
    transformers, looked up on the already imported package (no module is ever imported by name)."""
    import diffusers
    import transformers

    packages = {"diffusers": diffusers, "transformers": transformers}
    entry = index.get(name)
    fix = f"fix {where or 'model_index.json'} so that {name!r} names a diffusers or transformers class"
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise UnknownModelError(f"model_index.json: {name!r} must be [library, class], got {str(entry)[:80]}; {fix}")
    library, cls_name = entry
    bases = _COMPONENT_BASES.get(name, ())
    allowed = [lib for lib, _ in bases]
    if library not in allowed:
        raise UnknownModelError(f"model_index.json: {name!r} names library {library[:60]!r}; only "
                                f"{' or '.join(allowed) or 'diffusers/transformers'} is allowed for it; {fix}")
    base_name = dict(bases)[library]
    base = getattr(packages[library], base_name)
    cls = getattr(packages[library], cls_name, None) if cls_name.isidentifier() and not cls_name.startswith("_") \
        else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UnknownModelError(f"model_index.json: {name!r} names {library}.{cls_name[:60]}, which is not a "
                                f"{library} {base_name} class; {fix}")
    return cls


def _load_folder(folder: Path, name: str, dtype: Any, allow_pickle: bool = False) -> Checkpoint:
    from nodegraph import jsonsafe

    index_path = folder / "model_index.json"
    if not index_path.exists():
        raise UnknownModelError(f"{name}: folder {folder} has no model_index.json, so it is not a diffusers "
                                "pipeline folder")
    try:
        index = jsonsafe.loads(index_path.read_bytes())
    except ValueError as exc:
        raise UnknownModelError(f"{name}: {index_path} is not valid JSON ({exc}); fix or re-save the folder") \
            from None
    if not isinstance(index, dict):
        raise UnknownModelError(f"{name}: {index_path} must hold a JSON object; re-save the folder")
    missing = [c for c in ("unet", "vae", "text_encoder", "scheduler") if c not in index and
               not (c == "text_encoder" and "text_encoder_2" in index)]
    if missing:
        raise UnknownModelError(f"{name}: the diffusers folder lacks {', '.join(missing)}; only Stable Diffusion "
                                "style pipelines (UNet + VAE + CLIP) load here")
    kw = {"torch_dtype": dtype} if dtype is not None else {}
    # Weights only from .safetensors (a .bin in a folder is a pickle) unless pickles are allowed explicitly.
    safe = {} if allow_pickle else {"use_safetensors": True}
    where = str(index_path)
    classes = {c: _component_class(index, c, where) for c in _COMPONENT_BASES
               if c in ("unet", "vae", "scheduler") or (index.get(c) or [None])[0]}

    def load(component: str) -> Any:
        extra = kw if component != "vae" else {}
        pickles = [p.name for p in sorted((folder / component).glob("*")) if p.suffix.lower() in PICKLE_EXTENSIONS]
        if safe and pickles and not any((folder / component).glob("*.safetensors")):
            raise UnsafeModelError(f"{name}: {component}/ holds only pickle weights ({', '.join(pickles[:3])}); "
                                   "loading pickles can run arbitrary code hidden in the file. Convert them to "
                                   ".safetensors, or start nodegraph with --allow-unsafe-pickle if you trust them")
        model = classes[component].from_pretrained(str(folder / component), **extra, **safe)
        return model.eval() if hasattr(model, "eval") else model

    encoders = tuple(load(c) for c in ("text_encoder", "text_encoder_2") if c in classes)
    tokenizers = tuple(classes[c].from_pretrained(str(folder / c), trust_remote_code=False)
                       for c in ("tokenizer", "tokenizer_2") if c in classes)
    unet, vae = load("unet"), load("vae")
    sched = dict(json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8")))
    arch = "embedded" if folder.resolve() == EMBEDDED_DIR else arch_of(dict(unet.config), len(encoders) > 1)
    return _assemble(unet, vae, encoders, tokenizers, sched, arch, name,
                     {"format": "diffusers", "path": str(folder)})


def _load_single(state: dict[str, Any], found: Detected, name: str, dtype: Any) -> Checkpoint:
    """Models and tokenizers built in memory from ``found``'s configs (no config folder is written)."""
    from . import single_file

    unet = single_file.unet(state, found.config("unet/config.json"), dtype, name)
    vae = single_file.vae(state, found.config("vae/config.json"), name)
    encoders, tokenizers = [], []
    for component, tok_name in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if f"{component}/config.json" in found.files:
            encoders.append(single_file.text_encoder(state, component, found.config(f"{component}/config.json"),
                                                     dtype, name))
            tokenizers.append(_tokenizer(found.files, None, tok_name, name))
    sched = found.config("scheduler/scheduler_config.json")
    return _assemble(unet, vae, tuple(encoders), tuple(tokenizers), sched, found.arch, name,
                     {"format": "single_file", "reasons": list(found.reasons), "inpaint": found.inpaint})


def _assemble(unet: Any, vae: Any, encoders: tuple[Any, ...], tokenizers: tuple[Any, ...], sched: dict[str, Any],
              arch: str, name: str, extras: dict[str, Any]) -> Checkpoint:
    sched = {k: v for k, v in sched.items() if not k.startswith("_") or k == "_class_name"}
    vae_model = VAEModel(vae=vae, scaling_factor=float(vae.config.scaling_factor),
                         shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0), source=name)
    try:
        latent = LatentFormat.from_vae(vae_model)
    except Exception:  # noqa: BLE001 - the preview projection is a nicety; never fail a load for it
        log.warning("could not fit the latent preview projection of %s", name, exc_info=True)
        latent = LatentFormat.from_vae(vae_model, fit_rgb=False)
    model = DiffusionModel(unet=unet, scheduler_config=sched, arch=arch, source=name, latent=latent)
    return Checkpoint(model=model,
                      clip=TextEncoder(tokenizers=tokenizers, encoders=encoders, arch=arch),
                      vae=vae_model, extras=extras)


# ---- VAEs ----------------------------------------------------------------------------------------------------------

def load_vae(path: Path, config: EngineConfig | None = None, *, name: str | None = None) -> VAEModel:
    """Load an AutoencoderKL from a diffusers folder (or a pipeline's vae/) or a single file (LDM or diffusers keys).

    A single VAE file's layout follows from its tensor shapes, but not which model family it serves: the scaling
    factor is SDXL's (0.13025) when the file name mentions ``xl``, else SD1/2's (0.18215).
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    name = name or path.name
    if path.is_dir():
        sub = path / "vae" if (path / "model_index.json").exists() else path
        if not (sub / "config.json").exists():
            raise UnknownModelError(f"{name}: {sub} has no config.json, so it is not a diffusers VAE folder")
        safe = {} if _allowed(config) else {"use_safetensors": True}  # a .bin in a folder is a pickle
        vae = AutoencoderKL.from_pretrained(str(sub), **safe).eval()
    else:
        if not path.exists():
            raise FileNotFoundError(f"VAE {name!r} not found at {path}")
        state = load_state_dict(path, _allowed(config))
        keys = list(state)
        if any(k.startswith("model.diffusion_model.") for k in keys):
            raise UnknownModelError(f"{name} is a full checkpoint, not a VAE; put it in models/checkpoints")
        from .families import vae_reader

        family_vae = vae_reader(keys)  # Wan, LTX-Video, Stable Cascade's stage A, …: families.VAE_FILES
        if family_vae is not None:
            return family_vae(state, name)
        if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.", "vae.")) for k in keys):
            raise UnknownModelError(f"{name} is not a VAE: no encoder./decoder. tensors among {len(keys)}")
        scaling = 0.13025 if "xl" in path.name.lower() else 0.18215
        if any(".down_blocks." in k for k in keys):  # diffusers naming: load the tensors into the SD config's model
            arch = "sdxl" if scaling == 0.13025 else "sd1"
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(CONFIGS_DIR / arch / "vae")))
            vae.load_state_dict(state)
            vae.eval()
        else:  # LDM naming: the config follows from the shapes
            from . import derive, single_file
            from .flow.loading import vae_overrides

            prefix = next((p for p in ("first_stage_model.", "vae.") if any(k.startswith(p) for k in keys)), "")
            cfg = dict(derive.vae_config(_header_of(path, state), prefix), scaling_factor=scaling)
            cfg.update(vae_overrides(state))  # 16-channel (Flux) VAEs: no quant convs, Flux's scale and shift
            vae = single_file.vae(state, cfg, name)
    return VAEModel(vae=vae, scaling_factor=float(vae.config.scaling_factor),
                    shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0), source=name)


__all__ = ["EMBEDDED_NAME", "EMBEDDED_DIR", "UnsafeModelError", "UnknownModelError", "checkpoint_names",
           "vae_names", "lora_names", "upscale_model_names", "resolve_model", "file_fingerprint", "check_loadable",
           "load_state_dict", "load_checkpoint", "load_vae", "clip_tokenizer", "quiet_libraries"]
