"""LoRA files: reading them and applying them to a MODEL or CLIP only while it is used.

Formats read (``.safetensors``): kohya/ComfyUI (``lora_unet_…``, ``lora_te_…``, ``lora_te1_…``/``lora_te2_…`` with
``.lora_down.weight``, ``.lora_up.weight``, ``.alpha``; UNet names in diffusers or LDM spelling, the latter as SDXL
LoRAs use), and diffusers/PEFT (``unet.<module>.lora_A.weight``/``lora_B.weight``, ``.lora.down/up.weight``,
``text_encoder[_2].…``). Linear and convolution (LoCon) layers; the delta is ``strength · alpha/rank · up @ down``.
A transformer MODEL (Flux, SD3, Qwen-Image, Wan, LTX-Video, …) maps its LoRA names through ``transformer_lora``.

Usage (the cached base model is never changed for longer than the ``with`` block)::

    model = model.with_lora(LoraPatch(name, path, strength))    # LoraLoader does this
    with lora.applied(model, library=ctx.services.get(LoraLibrary)):   # sampling / text encoding
        ...  # the UNet (or text encoders of a TextEncoder) now include every patch in model.loras

The same list holds merges (``merging.MergePatch``: ModelMergeSimple and friends), applied in their place in the
order. ``applied`` accepts a DiffusionModel or a TextEncoder, adds the deltas in place to the weights on whatever
device/dtype they are (enter it after moving the model to its device), and on exit copies the saved original
weights back, bit for bit. It is not re-entrant for the same base module, and two runs must not sample the same
base model at the same time (the executor runs one prompt at a time). ``library`` caches parsed files.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .types import DiffusionModel, LoraPatch, TextEncoder

log = logging.getLogger(__name__)

_PAIRS = ((".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"),
          (".lora.down.weight", ".lora.up.weight"), (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))


@dataclass
class LoraPair:
    """One low-rank update: ``up @ down`` scaled by ``alpha / rank`` (alpha None: scale 1)."""

    down: Any
    up: Any
    alpha: float | None = None

    @property
    def scale(self) -> float:
        """alpha / rank, or 1 when the file gives no alpha."""
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]

    def delta(self, shape: Any) -> Any:
        """The full-rank weight update, reshaped to the target weight's ``shape`` (float32)."""
        down, up = self.down.float(), self.up.float()
        full = up.flatten(1) @ down.flatten(1)
        return full.reshape(shape)


@dataclass
class LoraWeights:
    """A parsed LoRA file: its updates keyed by the module name as the file spells it."""

    name: str
    pairs: dict[str, LoraPair]
    skipped: list[str] = field(default_factory=list)
    #: the file's tensors as read (for converters of transformer LoRAs) and per-model conversions of them
    state: dict[str, Any] = field(default_factory=dict, repr=False)
    derived: dict[Any, Any] = field(default_factory=dict, repr=False)


def parse_lora(state: dict[str, Any], name: str = "lora") -> LoraWeights:
    """Group a LoRA state dict into down/up/alpha triples; unknown tensors are listed in ``skipped``."""
    pairs: dict[str, LoraPair] = {}
    used: set[str] = set()
    for key in state:
        for down_sfx, up_sfx in _PAIRS:
            if key.endswith(down_sfx):
                prefix = key[: -len(down_sfx)]
                up_key = prefix + up_sfx
                if up_key not in state:
                    continue
                alpha = state.get(prefix + ".alpha")
                pairs[prefix] = LoraPair(state[key], state[up_key], None if alpha is None else float(alpha))
                used.update({key, up_key, prefix + ".alpha"})
    skipped = [k for k in state if k not in used]
    return LoraWeights(name=name, pairs=pairs, skipped=skipped, state=dict(state))


def load_lora(path: str | Path, allow_pickle: bool = False) -> LoraWeights:
    """Read and parse a LoRA file (pickle formats only with ``allow_pickle``)."""
    from .loading import load_state_dict

    path = Path(path)
    state = load_state_dict(path, allow_pickle)
    weights = parse_lora(state, path.name)
    if not weights.pairs:
        from .detect import UnknownModelError

        raise UnknownModelError(f"{path.name} holds no LoRA weights (no .lora_down/.lora_up or lora_A/lora_B "
                                f"tensors among {len(state)}); is it a full checkpoint or an embedding?")
    return weights


class LoraLibrary:
    """Parsed LoRA files, held by the engine's ModelManager (within its RAM budget) and keyed by file fingerprint.

    A service: ``LoraLibrary(manager)``; without a manager it keeps its own (with the machine's default budget).
    """

    def __init__(self, manager: Any = None) -> None:
        if manager is None:
            from nodegraph.models.manager import ModelManager

            manager = ModelManager()
        self.manager = manager

    def get(self, path: str | Path, allow_pickle: bool = False) -> LoraWeights:
        """The parsed file, read from disk when new, changed, or evicted."""
        return self.manager.load_lora(Path(path), allow_pickle)

    def release(self) -> None:
        """Forget every parsed LoRA file not in use (the manager frees them)."""
        self.manager.release(kinds=("lora",))


# ---- where each LoRA key lands --------------------------------------------------------------------------------------

def _flat(name: str) -> str:
    return name.replace(".", "_")


def unet_targets(unet: Any) -> dict[str, Any]:
    """Every spelling of each UNet layer a LoRA may use → the module (a transformer: ``transformer_lora.Targets``)."""
    from . import transformer_lora
    from .ldm import unet_module_names

    if transformer_lora.is_transformer(unet):
        return transformer_lora.Targets(unet)

    modules = dict(unet.named_modules())
    out: dict[str, Any] = {}
    for name, module in modules.items():
        if getattr(module, "weight", None) is None or not name:
            continue
        for key in (f"lora_unet_{_flat(name)}", f"unet.{name}", f"unet.base_model.model.{name}"):
            out[key] = module
    for ldm, name in unet_module_names(unet).items():
        out[f"lora_unet_{_flat(ldm)}"] = modules[name]
    return out


def text_targets(encoders: tuple[Any, ...]) -> dict[str, Any]:
    """Every spelling of each text-encoder layer a LoRA may use → the module (te/te1 = first, te2 = second)."""
    out: dict[str, Any] = {}
    for i, encoder in enumerate(encoders):
        wrapped = hasattr(encoder, "text_model")
        kohya = ("lora_te", "lora_te1") if i == 0 else ("lora_te2",)
        dotted = "text_encoder" if i == 0 else "text_encoder_2"
        for name, module in encoder.named_modules():
            if getattr(module, "weight", None) is None or not name:
                continue
            full = name if wrapped else f"text_model.{name}"
            for k in kohya:
                out[f"{k}_{_flat(full)}"] = module
            out[f"{dotted}.{full}"] = module
            out[f"{dotted}.{name}"] = module
    return out


def _normalise(key: str) -> str:
    """Old diffusers attention-processor names (``attn1.processor.to_q_lora``) → module names."""
    if ".processor." in key:
        key = key.replace(".processor.", ".")
        for proj in ("to_q", "to_k", "to_v"):
            key = key.replace(f".{proj}_lora", f".{proj}")
        key = key.replace(".to_out_lora", ".to_out.0")
    return key


def _is_for(key: str, kind: str) -> bool:
    if kind == "unet":
        return key.startswith(("lora_unet_", "unet."))
    return key.startswith(("lora_te", "text_encoder"))


@dataclass
class Matched:
    """Which updates of a LoRA found a layer: (module, pair) plus the keys that found none."""

    updates: list[tuple[Any, LoraPair]]
    unmatched: list[str]


def match(weights: LoraWeights, targets: dict[str, Any], kind: str) -> Matched:
    """Pair the LoRA's ``kind`` ("unet" or "text") updates with modules."""
    from . import transformer_lora

    if isinstance(targets, transformer_lora.Targets):
        return transformer_lora.match(weights, targets)
    updates, unmatched = [], []
    for key, pair in weights.pairs.items():
        if not _is_for(key, kind):
            continue
        module = targets.get(_normalise(key))
        if module is None:
            unmatched.append(key)
        else:
            updates.append((module, pair))
    return Matched(updates, unmatched)


def _targets_of(target: DiffusionModel | TextEncoder) -> tuple[dict[str, Any], str]:
    if isinstance(target, DiffusionModel):
        return unet_targets(target.unet), "unet"
    if isinstance(target, TextEncoder):
        return text_targets(tuple(target.encoders)), "text"
    raise TypeError(f"LoRAs apply to a DiffusionModel or TextEncoder, not {type(target).__name__}")


@contextlib.contextmanager
def applied(target: DiffusionModel | TextEncoder, library: LoraLibrary | None = None) -> Iterator[int]:
    """Apply the target's patches (LoRA deltas and merges, in order) to its weights for the block and restore them
    exactly afterwards.

    Yields the number of weights changed. Patches with strength 0 are skipped entirely.
    """
    import torch

    from . import merging

    patches = [p for p in getattr(target, "loras", ()) if p.strength != 0]
    if not patches:
        yield 0
        return
    saved: dict[int, tuple[Any, Any]] = {}
    try:
        with torch.no_grad():
            # what each merge reads from its other model, taken before this target's weights change
            sources = {id(p): merging.source_weights(p, target, library) for p in patches
                       if isinstance(p, merging.MergePatch)}
            targets: dict[str, Any] | None = None
            kind = ""
            for patch in patches:
                if isinstance(patch, merging.MergePatch):
                    merging.apply(patch, target, sources.pop(id(patch)), saved)
                    continue
                if targets is None:
                    targets, kind = _targets_of(target)
                _apply_lora(patch, targets, kind, library, saved, getattr(target, "family", "unet"))
            sources.clear()
        yield len(saved)
    finally:
        with torch.no_grad():
            for param, original in saved.values():
                param.copy_(original)


def _apply_lora(patch: LoraPatch, targets: dict[str, Any], kind: str, library: LoraLibrary | None,
                saved: dict[int, tuple[Any, Any]], family: str = "unet") -> None:
    """Add one LoRA's deltas in place, saving each original weight first."""
    from . import transformer_lora

    weights = (library.get(patch.path, _trusted(patch)) if library is not None
               else load_lora(patch.path, _trusted(patch)))
    if isinstance(targets, transformer_lora.Targets):
        transformer_lora.apply(weights, targets, patch.strength, saved, family)
        return
    found = match(weights, targets, kind)
    if found.unmatched:
        log.warning("LoRA %s: %d of its %s layers match nothing in this model (e.g. %s)", patch.name,
                    len(found.unmatched), kind, found.unmatched[0])
    for module, pair in found.updates:
        param = module.weight
        if id(param) not in saved:
            saved[id(param)] = (param, param.detach().clone())
        delta = pair.delta(param.shape).to(param.device)
        param.add_((delta * (patch.strength * pair.scale)).to(param.dtype))


def _trusted(patch: LoraPatch) -> bool:
    return bool(getattr(patch, "allow_pickle", False))
