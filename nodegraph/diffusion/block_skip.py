"""Skipping transformer blocks for skip-layer guidance (ComfyUI's ``patches_replace["dit"]`` "double_block" /
"single_block" replaced by a function returning its inputs).

``skipped_blocks(transformer, double, single)`` makes the listed blocks of a diffusers transformer return their inputs
unchanged while the context is open, and restores them after. The "double" blocks are the transformer's first (or
only) block list, the "single" blocks its ``single_transformer_blocks`` (Flux, Chroma, Flux.2, HunyuanVideo), numbered
from 0 as ComfyUI numbers them. What a skipped block returns follows what its class's ``forward`` returns
(``PASS_THROUGH``), so the transformer's loop sees the same tuple shape.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .patches import ModelPatch

_ENC_HS = ("encoder_hidden_states", "hidden_states")
_HS_ENC = ("hidden_states", "encoder_hidden_states")

#: block class name -> the forward arguments it returns, in order (one name: returned alone)
PASS_THROUGH: dict[str, tuple[str, ...]] = {
    "FluxTransformerBlock": _ENC_HS, "FluxSingleTransformerBlock": _ENC_HS,
    "ChromaTransformerBlock": _ENC_HS, "ChromaSingleTransformerBlock": ("hidden_states",),
    "Flux2TransformerBlock": _ENC_HS,
    "QwenImageTransformerBlock": _ENC_HS,
    "JointTransformerBlock": _ENC_HS,  # SD3
    "HunyuanVideoTransformerBlock": _HS_ENC, "HunyuanVideoSingleTransformerBlock": _HS_ENC,
    "HunyuanVideoTokenReplaceTransformerBlock": _HS_ENC, "HunyuanVideoTokenReplaceSingleTransformerBlock": _HS_ENC,
    "MochiTransformerBlock": _HS_ENC,
    "WanTransformerBlock": ("hidden_states",), "WanVACETransformerBlock": ("hidden_states",),
    "LTXVideoTransformerBlock": ("hidden_states",),
    "Lumina2TransformerBlock": ("hidden_states",),
    "ZImageTransformerBlock": ("x",),
}

#: "double" block lists, first found wins; "single" block lists
DOUBLE_LISTS = ("transformer_blocks", "blocks", "layers")
SINGLE_LISTS = ("single_transformer_blocks",)


def _flux2_single(bound: dict[str, Any]) -> Any:
    """Flux.2's single block: the text+image sequence, split back when asked (as its forward does)."""
    import torch

    hs, enc = bound["hidden_states"], bound.get("encoder_hidden_states")
    text_len = bound.get("text_seq_len")
    if enc is not None:
        text_len = enc.shape[1]
        hs = torch.cat([enc, hs], dim=1)
    if bound.get("split_hidden_states"):
        return hs[:, :text_len], hs[:, text_len:]
    return hs


def _pass_through(block: Any) -> Callable[..., Any]:
    """A forward for ``block`` that returns its inputs in the shape its own forward returns."""
    name = type(block).__name__
    signature = inspect.signature(type(block).forward)
    if name == "Flux2SingleTransformerBlock":
        pick: Callable[[dict], Any] = _flux2_single
    elif name in PASS_THROUGH:
        names = PASS_THROUGH[name]

        def pick(bound: dict) -> Any:
            return bound[names[0]] if len(names) == 1 else tuple(bound.get(n) for n in names)
    else:
        raise ValueError(f"skip-layer guidance does not know how to skip a {name} block (its outputs are not "
                         "listed in nodegraph.diffusion.block_skip.PASS_THROUGH); remove the SkipLayerGuidanceDiT "
                         "node for this model")

    def forward(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(block, *args, **kwargs)
        bound.apply_defaults()
        return pick(dict(bound.arguments))

    return forward


def block_lists(transformer: Any) -> tuple[Any, Any]:
    """(the "double" block list, the "single" block list or None) of a diffusers transformer."""
    double = next((getattr(transformer, n) for n in DOUBLE_LISTS if hasattr(transformer, n)), None)
    single = next((getattr(transformer, n) for n in SINGLE_LISTS if hasattr(transformer, n)), None)
    if double is None:
        raise ValueError(f"{type(transformer).__name__} has no transformer block list nodegraph knows "
                         f"({', '.join(DOUBLE_LISTS)}); skip-layer guidance cannot run on it")
    return double, single


@contextlib.contextmanager
def skipped_blocks(transformer: Any, double: tuple[int, ...] = (), single: tuple[int, ...] = ()) -> Iterator[None]:
    """While open, the listed blocks of ``transformer`` return their inputs unchanged (numbers past the end of a
    list are ignored, as ComfyUI's patches for absent blocks never run)."""
    double_list, single_list = block_lists(transformer)
    chosen = [double_list[i] for i in sorted(set(double)) if 0 <= i < len(double_list)]
    if single_list is not None:
        chosen += [single_list[i] for i in sorted(set(single)) if 0 <= i < len(single_list)]
    installed = []
    try:
        for block in chosen:
            block.forward = _pass_through(block)
            installed.append(block)
        yield
    finally:
        for block in installed:
            del block.forward


def parse_layers(text: str) -> tuple[int, ...]:
    """The block numbers in ``text`` (every run of digits, as ComfyUI's regular expression reads them)."""
    import re

    return tuple(int(d) for d in re.findall(r"\d+", text or ""))


@dataclass(frozen=True)
class SkipLayerGuidanceDiT(ModelPatch):
    """ComfyUI's SkipLayerGuidanceDiT (a post-cfg function): inside [start, end] percent the positive runs again with
    the blocks skipped and the guided x0 moves by (positive - skipped) · scale, then is optionally rescaled."""

    double: tuple[int, ...] = ()
    single: tuple[int, ...] = ()
    scale: float = 3.0
    start_percent: float = 0.01
    end_percent: float = 0.15
    rescaling_scale: float = 0.0


@dataclass(frozen=True)
class SkipLayerGuidanceDiTSimple(ModelPatch):
    """ComfyUI's SkipLayerGuidanceDiTSimple: inside [start, end] percent the negative runs with the blocks skipped."""

    double: tuple[int, ...] = ()
    single: tuple[int, ...] = ()
    start_percent: float = 0.0
    end_percent: float = 1.0


def _inside(patch: Any, flow: Any, sigma: float) -> bool:
    return flow.percent_to_sigma(patch.end_percent) <= sigma <= flow.percent_to_sigma(patch.start_percent)


def dit_slg_patches(patches: tuple[Any, ...], transformer: Any, family: str) -> tuple[Any, ...]:
    """The skip-layer guidance patches among ``patches``; ValueError naming ``family`` when its blocks cannot be
    skipped."""
    found = tuple(p for p in patches if isinstance(p, (SkipLayerGuidanceDiT, SkipLayerGuidanceDiTSimple)))
    if found:
        try:
            double, single = block_lists(transformer)
            for blocks in (double, single or []):
                for block in list(blocks)[:1]:
                    _pass_through(block)
        except ValueError as exc:
            raise ValueError(f"SkipLayerGuidanceDiT/SkipLayerGuidanceDiTSimple: the {family} model's blocks cannot "
                             f"be skipped ({exc})") from None
    return found


#: families sampled by their own loop whose denoiser applies the patches (video_models.wan_sampling.WanDenoiser)
OWN_LOOPS = ("wan",)
#: families on the shared flow loop with the plain FlowDenoiser (no families.DENOISERS entry)
PLAIN_FLOW = ("flux", "sd3", "chroma")


def wired(family: str) -> bool:
    """Whether sampling a ``family`` model applies SkipLayerGuidanceDiT(Simple) (FlowDenoiser's or WanDenoiser's
    guidance, not a denoiser that replaces it)."""
    from .families import DENOISERS, SAMPLERS, lookup

    if family in OWN_LOOPS:
        return True
    if lookup(SAMPLERS, family) is not None:
        return False
    denoiser = lookup(DENOISERS, family)
    if denoiser is None:
        return family in PLAIN_FLOW
    from .flow.sampling import FlowDenoiser

    return denoiser.__call__ is FlowDenoiser.__call__


def check_model(model: Any, node: str) -> None:
    """ValueError naming ``node`` and the family when sampling ``model`` (a DiffusionModel) cannot apply skip-layer
    guidance: a family whose sampler does not run the patches, or blocks nodegraph cannot skip."""
    family = getattr(model, "family", "") or "this"
    if not wired(family):
        raise ValueError(f"{node} is not supported on {family} models yet (supported: Flux, Chroma, SD3, Flux.2, "
                         "Qwen-Image, HunyuanVideo, Mochi, Wan); remove the node for this model")
    transformer = getattr(model, "unet", None)
    if transformer is not None:
        dit_slg_patches((SkipLayerGuidanceDiTSimple(),), transformer, family)


def negative_skips(patches: tuple[Any, ...], flow: Any, sigma: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(double, single) blocks the negative pass skips at ``sigma`` (SkipLayerGuidanceDiTSimple), empty when none."""
    double: tuple[int, ...] = ()
    single: tuple[int, ...] = ()
    for p in patches:
        if isinstance(p, SkipLayerGuidanceDiTSimple) and _inside(p, flow, sigma):
            double, single = p.double, p.single  # the last one recorded wins, as ComfyUI's calc_cond_batch function
    return double, single


def post_cfg(patches: tuple[Any, ...], flow: Any, sigma: float, cond: Any, out: Any,
             skipped: Callable[[tuple[int, ...], tuple[int, ...]], Any]) -> Any:
    """The guided x0 ``out`` after the SkipLayerGuidanceDiT patches; ``skipped(double, single)`` is the positive x0
    evaluated with those blocks skipped."""
    for p in patches:
        if not isinstance(p, SkipLayerGuidanceDiT) or p.scale <= 0 or not _inside(p, flow, sigma):
            continue
        out = out + (cond - skipped(p.double, p.single)) * p.scale
        if p.rescaling_scale != 0:
            factor = cond.std() / out.std()
            out = out * (p.rescaling_scale * factor + (1.0 - p.rescaling_scale))
    return out


__all__ = [
    "DOUBLE_LISTS",
    "PASS_THROUGH",
    "SINGLE_LISTS",
    "SkipLayerGuidanceDiT",
    "SkipLayerGuidanceDiTSimple",
    "block_lists",
    "check_model",
    "dit_slg_patches",
    "negative_skips",
    "parse_layers",
    "post_cfg",
    "skipped_blocks",
    "wired",
]
