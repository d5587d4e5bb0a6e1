"""Model merges (ModelMergeSimple/Blocks/Add/Subtract, CLIPMergeSimple) as patches applied while a model is used.

A merge never copies weights when it is made: ``merge_models(model1, model2, …)`` returns ``model1`` with one more
entry in its patch list (the ``loras`` field of MODEL and CLIP values, applied in order by ``lora.applied``) that names
``model2``. While sampling or encoding, each weight ``w`` of model1 becomes, in float32 and as ComfyUI computes it,

    w · strength_model + strength_patch · w2

where ``w2`` is model2's weight of the same name with model2's own patches applied (merges of merges, LoRAs). Only
weights present in both with the same shape are merged (a shape mismatch is skipped with a warning, as ComfyUI does).
ComfyUI's nodes map to strengths like this (``ratio`` 1 keeps model1):

- ModelMergeSimple / CLIPMergeSimple: (ratio, 1 - ratio); ModelMergeAdd: (1, 1); ModelMergeSubtract: (m, -m);
- ModelMergeBlocks: as Simple with a ratio per block, chosen by the weight's LDM name (``input_blocks.*`` → input,
  ``middle_block.*`` → middle, ``out.*`` and ``output_blocks.*`` → out; anything else → input).

The text encoders of two CLIPs are paired by position (SDXL's CLIP-L with SD1's CLIP-L).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .types import DiffusionModel, TextEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MergePatch:
    """Another model's weights merged in: ``w · strength_model + strength_patch · w_other`` for every weight, or per
    LDM name prefix (``blocks``: (prefix, strength_model, strength_patch); the longest matching prefix wins)."""

    other: Any  # a MODEL or CLIP value, or a handle to one
    strength_model: float
    strength_patch: float
    blocks: tuple[tuple[str, float, float], ...] = ()
    name: str = "merge"

    @property
    def strength(self) -> float:
        """Non-zero unless the patch leaves every weight unchanged (for callers that skip zero-strength patches)."""
        plain = self.strength_model == 1.0 and self.strength_patch == 0.0
        return 0.0 if plain and all(m == 1.0 and p == 0.0 for _, m, p in self.blocks) else 1.0

    def strengths(self, key: str) -> tuple[float, float]:
        """(strength_model, strength_patch) for the weight whose LDM name is ``key``."""
        best, found = -1, (self.strength_model, self.strength_patch)
        for prefix, sm, sp in self.blocks:
            if key.startswith(prefix) and len(prefix) > best:
                best, found = len(prefix), (sm, sp)
        return found


def merge_models(target: Any, other: Any, strength_model: float, strength_patch: float,
           blocks: tuple[tuple[str, float, float], ...] = (), name: str = "merge") -> Any:
    """``target`` (a value or handle) with ``other`` merged in; neither input is changed."""
    from nodegraph.models.handles import derive

    patch = MergePatch(other, float(strength_model), float(strength_patch), tuple(blocks), name)
    return derive(target, loras=tuple(target.loras) + (patch,))


def _resolve(value: Any) -> Any:
    from nodegraph.models.handles import resolve

    return resolve(value)


def _unet_key(unet: Any) -> Any:
    """name → LDM name (without ``diffusion_model.``) for the UNet's parameters; unknown names map to themselves."""
    from .ldm import _up_attention_blocks, unet_name_to_ldm

    names = [n for n, _ in unet.named_parameters()]
    with_attn = _up_attention_blocks(names)
    layers = int(getattr(unet.config, "layers_per_block", 2))

    def key(name: str) -> str:
        try:
            return unet_name_to_ldm(name, layers, with_attn)
        except (KeyError, ValueError, IndexError):
            return name
    return key


def named_weights(value: Any) -> Iterator[tuple[str, Any]]:
    """The parameters a merge touches: the UNet's, or ``<encoder index>.<name>`` of each text encoder."""
    if isinstance(value, DiffusionModel):
        yield from value.unet.named_parameters()
    elif isinstance(value, TextEncoder):
        for i, encoder in enumerate(value.encoders):
            for name, param in encoder.named_parameters():
                yield f"{i}.{name}", param
    else:
        raise TypeError(f"merges apply to a MODEL or a CLIP, not {type(value).__name__}")


def _modules(value: Any) -> list[Any]:
    return [value.unet] if isinstance(value, DiffusionModel) else list(value.encoders)


def source_weights(patch: MergePatch, target: Any, library: Any = None) -> dict[str, Any]:
    """The other model's weights as the merge reads them (its own patches applied). Call before changing
    ``target``: weights shared with it, or patched, are copied; others are read in place."""
    from . import lora

    other = _resolve(patch.other)
    if type(other) is not type(target):
        raise TypeError(f"{patch.name}: cannot merge a {type(other).__name__} into a {type(target).__name__}")
    shared = any(a is b for a in _modules(other) for b in _modules(target))
    if not other.loras and not shared:
        return {name: p.detach() for name, p in named_weights(other)}
    with lora.applied(other, library):
        return {name: p.detach().clone() for name, p in named_weights(other)}


def apply(patch: MergePatch, target: Any, source: dict[str, Any], saved: dict[int, tuple[Any, Any]]) -> int:
    """Merge ``source`` into ``target``'s weights in place, saving each original in ``saved`` (id → (param, copy))
    first; returns how many weights changed."""
    key = _unet_key(target.unet) if isinstance(target, DiffusionModel) and patch.blocks else (lambda n: n)
    changed, mismatched = 0, []
    for name, param in named_weights(target):
        other = source.get(name)
        if other is None:
            continue
        if tuple(other.shape) != tuple(param.shape):
            mismatched.append(f"{name} {tuple(param.shape)} != {tuple(other.shape)}")
            continue
        sm, sp = patch.strengths(key(name))
        if sm == 1.0 and sp == 0.0:
            continue
        if id(param) not in saved:
            saved[id(param)] = (param, param.detach().clone())
        value = param.detach().float() * sm + other.to(param.device).float() * sp
        param.data.copy_(value.to(param.dtype))
        changed += 1
    if mismatched:
        log.warning("%s: %d weights differ in shape and were not merged (e.g. %s)", patch.name, len(mismatched),
                    mismatched[0])
    return changed
