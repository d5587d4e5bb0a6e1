"""LoRAs on diffusion transformers (Flux.1, Chroma, SD3/3.5, Qwen-Image, Wan, LTX-Video, and any diffusers model).

Our transformers are diffusers models with diffusers' module names, so a LoRA file is first brought to diffusers'
own PEFT names (``transformer.<module>.lora_A.weight`` / ``lora_B.weight`` / ``.alpha``) by the converter of the
transformer's class in ``LORA_FORMATS``, then each update is matched to ``<module>.weight`` and applied as an ordered
weight patch by ``lora.applied`` (same save/restore as UNet LoRAs; strength 0 is skipped).

Converters (``LORA_FORMATS``, keyed by the diffusers class name of ``model.unet``):

- ``"diffusers:<Mixin>"``: the ``lora_state_dict`` of that diffusers LoRA loader mixin — diffusers' own converters
  for kohya/ComfyUI/musubi/xlabs files (Flux's fused qkv split into q/k/v, Wan's ``diffusion_model.blocks.*``, …);
- ``"<module>:<function>"`` (relative to ``nodegraph.diffusion``): ``fn(state, transformer) -> state`` in PEFT names
  (Flux's and SD3's ComfyUI/kohya names: ``flow.lora``).

A class not in the table is matched as is: ``transformer.``/``diffusion_model.``/``base_model.model.`` prefixes over
diffusers names, or kohya ``lora_unet_`` with the dots of the diffusers name as underscores. To plug in a new family,
add one line above the marker of ``LORA_FORMATS``.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: diffusers transformer class -> converter of its LoRA files to diffusers' PEFT names (see the module docstring).
LORA_FORMATS: dict[str, str] = {
    "FluxTransformer2DModel": "flow.lora:flux_to_diffusers",
    "ChromaTransformer2DModel": "flow.lora:flux_to_diffusers",
    "SD3Transformer2DModel": "flow.lora:sd3_to_diffusers",
    "QwenImageTransformer2DModel": "diffusers:QwenImageLoraLoaderMixin",
    "WanTransformer3DModel": "diffusers:WanLoraLoaderMixin",
    "WanVACETransformer3DModel": "diffusers:WanLoraLoaderMixin",
    "LTXVideoTransformer3DModel": "diffusers:LTXVideoLoraLoaderMixin",
    "Flux2Transformer2DModel": "diffusers:Flux2LoraLoaderMixin",
    "HiDreamImageTransformer2DModel": "diffusers:HiDreamImageLoraLoaderMixin",
    "HunyuanVideoTransformer3DModel": "diffusers:HunyuanVideoLoraLoaderMixin",
    "AuraFlowTransformer2DModel": "diffusers:AuraFlowLoraLoaderMixin",
    "ZImageTransformer2DModel": "diffusers:ZImageLoraLoaderMixin",
    "Lumina2Transformer2DModel": "diffusers:Lumina2LoraLoaderMixin",
    "CosmosTransformer3DModel": "diffusers:CosmosLoraLoaderMixin",
    "LTX2VideoTransformer3DModel": "diffusers:LTX2LoraLoaderMixin",
    # [transformer lora formats: add new classes above this line]
}

_PREFIXES = ("transformer.", "diffusion_model.", "model.diffusion_model.", "base_model.model.", "unet.")
_NOT_MODEL = ("text_encoder", "lora_te", "te1.", "te2.", "text_encoders.")


class Targets(dict):
    """Module name -> module of a transformer's weighted layers (what ``lora.unet_targets`` gives a transformer)."""

    def __init__(self, transformer: Any) -> None:
        super().__init__((name, m) for name, m in transformer.named_modules()
                         if name and getattr(m, "weight", None) is not None)
        self.transformer = transformer
        self.kind = type(transformer).__name__
        self.flat = {"lora_unet_" + name.replace(".", "_"): name for name in self}


def is_transformer(module: Any) -> bool:
    """Whether ``module`` (a MODEL's ``unet``) is a diffusion transformer rather than an SD UNet."""
    return type(module).__name__ != "UNet2DConditionModel" and not hasattr(module, "down_blocks")


def _converter(kind: str) -> Any:
    ref = LORA_FORMATS.get(kind)
    if ref is None:
        return None
    if ref.startswith("diffusers:"):
        import diffusers.loaders.lora_pipeline as lp

        mixin = getattr(lp, ref.split(":", 1)[1], None)
        if mixin is None:  # an older diffusers without this family's loader: names as is
            return None

        def convert(state: dict[str, Any], transformer: Any) -> dict[str, Any]:
            params = inspect.signature(mixin.lora_state_dict).parameters
            if "return_alphas" in params:
                out, alphas = mixin.lora_state_dict(state, return_alphas=True)
                out = dict(out)
                out.update({k if k.endswith(".alpha") else k + ".alpha": v for k, v in (alphas or {}).items()})
                return out
            out = mixin.lora_state_dict(state)
            return dict(out[0] if isinstance(out, tuple) else out)
        return convert
    from .families import resolve

    return resolve(ref)


def _module_name(key: str, targets: Targets) -> str | None:
    """The diffusers module a converted key's prefix names, or None."""
    if key in targets.flat:
        return targets.flat[key]
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return key if key in targets else None


@dataclass(frozen=True)
class Update:
    """One change to a transformer parameter: ``scale · up @ down`` (a LoRA pair) or ``scale · diff`` (a full
    difference: ``.diff``/``.diff_b`` tensors, PEFT's ``lora_B.bias``)."""

    module: str
    param: str  # "weight" | "bias"
    pair: Any = None
    diff: Any = None
    scale: float = 1.0

    def delta(self, shape: Any) -> Any:
        """The float32 change, shaped like the parameter (ValueError when the sizes differ)."""
        full = self.pair.delta(shape) if self.pair is not None else self.diff.float()
        if full.numel() != math.prod(shape):
            raise ValueError(f"{self.module}.{self.param} is {tuple(shape)} but the update has {full.numel()} values")
        return full.reshape(shape) * self.scale


_DIFFS = {".lora_B.bias": "bias", ".diff_b": "bias", ".diff": "weight"}


def converted(weights: Any, targets: Targets) -> tuple[list[Update], list[str], list[str]]:
    """(updates, unmatched keys, ignored tensor names) of a parsed LoRA file on ``targets``' transformer
    (memoised per file and transformer class)."""
    from .lora import parse_lora

    memo = weights.derived.get(("transformer", targets.kind))
    if memo is not None:
        return memo
    state = dict(weights.state)
    convert = _converter(targets.kind)
    if convert is not None:  # copies: some of diffusers' converters scale the tensors they are given in place
        state = {k: v.clone() for k, v in state.items()}
        try:
            state = convert(state, targets.transformer)
        except (ValueError, KeyError, RuntimeError, IndexError, AssertionError) as exc:
            raise ValueError(f"LoRA {weights.name}: its tensor names are not a format known for "
                             f"{targets.kind} ({type(exc).__name__}: {exc}); it was probably made for another "
                             "model family or by a trainer whose format is not supported") from exc
    parsed = parse_lora(state, weights.name)
    updates: list[Update] = []
    unmatched: list[str] = []
    for key, pair in parsed.pairs.items():
        if key.startswith(_NOT_MODEL):
            continue  # the CLIP's part of the file
        name = _module_name(key, targets)
        if name is None:
            unmatched.append(key)
        else:
            updates.append(Update(name, "weight", pair=pair, scale=pair.scale))
    ignored = []
    for key in parsed.skipped:
        suffix = next((s for s in _DIFFS if key.endswith(s)), None)
        if suffix is None:
            if not key.endswith(".alpha") and not key.startswith(_NOT_MODEL):
                ignored.append(key)
            continue
        prefix = key[: -len(suffix)]
        name = _module_name(prefix, targets)
        if name is None:
            unmatched.append(prefix)
            continue
        pair = parsed.pairs.get(prefix)
        updates.append(Update(name, _DIFFS[suffix], diff=state[key], scale=pair.scale if pair is not None else 1.0))
    weights.derived[("transformer", targets.kind)] = (updates, unmatched, ignored)
    return updates, unmatched, ignored


def match(weights: Any, targets: Targets) -> Any:
    """``lora.Matched`` (module, pair) updates of a parsed LoRA file on a transformer (pair None: a difference)."""
    from .lora import Matched

    updates, unmatched, _ = converted(weights, targets)
    return Matched([(targets[u.module], u.pair) for u in updates], list(unmatched))


def apply(weights: Any, targets: Targets, strength: float, saved: dict[int, tuple[Any, Any]], family: str) -> int:
    """Add ``weights``' deltas times ``strength`` to the transformer in place (originals saved first); the number
    of updates applied. ValueError naming the file and family when nothing matches or a shape differs."""
    updates, unmatched, ignored = converted(weights, targets)
    if not updates and not unmatched:  # a LoRA for the text encoders only: nothing for the MODEL
        log.info("LoRA %s has no layers for the diffusion model; only its CLIP part applies", weights.name)
        return 0
    if not updates:
        raise ValueError(f"LoRA {weights.name}: 0 of its {len(unmatched)} layers match this {family} model "
                         f"({targets.kind}; e.g. {unmatched[0] if unmatched else '-'}); it was probably made for "
                         "another model family — use a LoRA trained for this model")
    if unmatched:
        log.warning("LoRA %s: %d of its %d layers match nothing in this %s model (e.g. %s)", weights.name,
                    len(unmatched), len(updates) + len(unmatched), family, unmatched[0])
    if ignored:
        log.warning("LoRA %s: %d tensors of a kind not applied here were ignored (e.g. %s)", weights.name,
                    len(ignored), ignored[0])
    for update in updates:
        param = getattr(targets[update.module], update.param, None)
        if param is None:
            raise ValueError(f"LoRA {weights.name}: it changes {update.module}.{update.param}, which this {family} "
                             "model does not have")
        try:
            delta = update.delta(param.shape).to(param.device) * strength
        except ValueError as exc:
            raise ValueError(f"LoRA {weights.name}: {exc} in this {family} model; it was made for another size of "
                             "this family") from None
        if id(param) not in saved:
            saved[id(param)] = (param, param.detach().clone())
        param.data.copy_((param.detach().float() + delta).to(param.dtype))
    return len(updates)


__all__ = ["LORA_FORMATS", "Targets", "Update", "apply", "converted", "is_transformer", "match"]
