"""ControlNets and T2I-Adapters during sampling, with ComfyUI's conditioning semantics.

The CONTROL_NET link value is a ``ControlNet``: the loaded model (a handle to a ``ControlModel``) and, once applied,
its hint image, strength, step range and the ControlNet applied before it. ``ControlNetApply(Advanced)`` stores the
last applied one in each conditioning entry's extras under "control"; the chain (``previous``) lets several act at
once, their residuals adding up. During sampling, for each UNet call and each entry with a control, every ControlNet
of the chain that is active at that timestep runs on the same noisy latent and text embeddings, and its residuals,
times its strength, are added to the UNet's skip connections (``down_block_additional_residuals``,
``mid_block_additional_residual``); a T2I-Adapter's features (computed once per hint size, times strength) go to
``down_intrablock_additional_residuals``. Hints are IMAGE tensors in 0..1, resized to the latent's pixel size as
ComfyUI does (nearest-exact after a centre crop) and broadcast over the batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

from .controlnet_files import ControlModel
from .regions import _percent_to_t

#: ComfyUI's union ControlNet types (SetUnionControlNetType), in its order; "auto" = -1.
UNION_TYPES: dict[str, int] = {"auto": -1, "openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2,
                               "canny/lineart/anime_lineart/mlsd": 3, "normal": 4, "segment": 5, "tile": 6,
                               "repaint": 7}


@dataclass(frozen=True, eq=False)
class ControlNet:
    """CONTROL_NET: a control model (handle or ``ControlModel``) and, once applied, how it applies."""

    model: Any
    hint: Any = None  # IMAGE [B, H, W, C] in 0..1
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: "ControlNet | None" = None
    union_type: int | None = None
    vae: Any = None

    def applied(self, hint: Any, strength: float, start_percent: float = 0.0, end_percent: float = 1.0,
                previous: "ControlNet | None" = None, vae: Any = None) -> "ControlNet":
        """A copy carrying a hint, strength and step range, after ``previous`` in the chain."""
        return replace(self, hint=hint, strength=float(strength), start_percent=float(start_percent),
                       end_percent=float(end_percent), previous=previous, vae=vae)

    def chain(self) -> list["ControlNet"]:
        """This ControlNet and those applied before it, first applied first."""
        out: list[ControlNet] = []
        node: ControlNet | None = self
        while node is not None:
            out.append(node)
            node = node.previous
        return out[::-1]


def _resolve(model: Any) -> ControlModel:
    from nodegraph.models.handles import resolve

    value = resolve(model)
    if not isinstance(value, ControlModel):
        raise TypeError(f"control_net carries {type(value).__name__}, not a loaded ControlNet; connect a "
                        "ControlNetLoader output")
    return value


def _controls(conditionings: tuple[list, ...]) -> list[ControlNet]:
    seen: dict[int, ControlNet] = {}
    for conditioning in conditionings:
        for _, extras in conditioning:
            control = extras.get("control")
            if isinstance(control, ControlNet):
                for c in control.chain():
                    seen.setdefault(id(c), c)
    return list(seen.values())


@contextlib.contextmanager
def control_modules(*conditionings: list) -> Iterator[list[Any]]:
    """The torch modules of every ControlNet in the conditionings, kept loaded (pinned) for the block."""
    from nodegraph.models.handles import is_handle

    controls = _controls(conditionings)
    with contextlib.ExitStack() as stack:
        handles = {id(c.model): c.model for c in controls if is_handle(c.model)}
        for handle in handles.values():
            stack.enter_context(handle.manager.use(handle))
        modules = {id(m.module): m.module for m in (_resolve(c.model) for c in controls)}
        yield list(modules.values())


@dataclass
class Active:
    """One ControlNet of a chain, ready on the device: module, hint, strength and timestep range."""

    module: Any
    kind: str
    hint: Any  # [B, C, H, W] on the device, 0..1
    strength: float
    t_start: float
    t_end: float
    downscale: int
    union_type: int | None = None
    _cache: dict = field(default_factory=dict)

    def active(self, t: Any) -> bool:
        """Whether it applies at model timestep ``t`` (999 = the noisiest)."""
        return self.t_end <= float(t) <= self.t_start

    def hint_for(self, batch: int, h: int, w: int) -> Any:
        """The hint resized to ``h`` × ``w`` latent cells (in pixels) and broadcast to ``batch``."""
        key = ("hint", batch, h, w)
        if key not in self._cache:
            from nodegraph.imaging import resample

            hint = self.hint
            size = (h * self.downscale, w * self.downscale)
            if tuple(hint.shape[-2:]) != size:
                hint = resample(hint.float(), size[1], size[0], "nearest-exact", "center").to(self.hint.dtype)
            if hint.shape[0] != batch:
                reps = -(-batch // hint.shape[0])
                hint = hint.repeat(reps, 1, 1, 1)[:batch]
            self._cache[key] = hint
        return self._cache[key]

    def adapter_state(self, batch: int, h: int, w: int) -> list[Any]:
        """A T2I-Adapter's features for a latent of ``h`` × ``w`` cells, times strength (computed once per size)."""
        key = ("adapter", batch, h, w)
        if key not in self._cache:
            hint = self.hint_for(batch, h, w)
            if int(self.module.config.in_channels) == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            self._cache[key] = [s * self.strength for s in self.module(hint)]
        return self._cache[key]


def _check_fits(model: ControlModel, unet_config: Any, what: str) -> None:
    """A clear error when a ControlNet was made for another model family than the UNet it would steer."""
    if model.kind == "sd3_controlnet":
        raise ValueError(f"{what}: ControlNet {model.source!r} is an SD3 ControlNet; use it with an SD3/SD3.5 model "
                         "(ControlNetApplySD3), or load a ControlNet made for this UNet's family")
    if unet_config is None or model.kind != "controlnet":
        return
    cfg = model.module.config
    ours = (list(cfg.block_out_channels), int(cfg.cross_attention_dim))
    theirs = (list(unet_config.block_out_channels), int(unet_config.cross_attention_dim))
    if ours != theirs:
        raise ValueError(f"{what}: ControlNet {model.source!r} was made for a {model.family} model (blocks "
                         f"{ours[0]}, text width {ours[1]}) but this model has blocks {theirs[0]} and text width "
                         f"{theirs[1]}; use a ControlNet made for this checkpoint's family")


def prepare(control: Any, batch: int, downscale: int, device: Any, dtype: Any, what: str,
            unet_config: Any = None) -> tuple[Active, ...]:
    """The chain of an entry's "control" extra ready for sampling (empty when there is none); ``unet_config``
    (the sampling UNet's) lets a ControlNet made for another model family fail with a clear message."""
    if control is None:
        return ()
    if not isinstance(control, ControlNet):
        raise TypeError(f"{what}: the conditioning's 'control' is {type(control).__name__}, not a ControlNet; "
                        "attach ControlNets with ControlNetApplyAdvanced")
    out = []
    for c in control.chain():
        if c.hint is None or c.strength == 0:
            continue
        model = _resolve(c.model)
        _check_fits(model, unet_config, what)
        hint = c.hint[..., :3].movedim(-1, 1) if c.hint.dim() == 4 else c.hint[None].movedim(-1, 1)
        out.append(Active(model.module, model.kind, hint.to(device, dtype), c.strength,
                          _percent_to_t(c.start_percent, float("inf")), _percent_to_t(c.end_percent, float("inf")),
                          downscale, c.union_type))
    return tuple(out)


def _sum(a: list[Any] | None, b: list[Any]) -> list[Any]:
    return list(b) if a is None else [x + y for x, y in zip(a, b)]


def _chain_residuals(chain: tuple[Active, ...], x: Any, t: Any, emb: Any, added: Any) -> dict[str, Any]:
    """Summed residuals of one chain for a batch (x, emb, added already batched)."""
    down = mid = intra = None
    batch, _, h, w = x.shape
    for c in chain:
        if not c.active(t):
            continue
        if c.kind == "t2i_adapter":
            intra = _sum(intra, c.adapter_state(batch, h, w))
            continue
        kw = {"added_cond_kwargs": added} if added is not None else {}
        d, m = c.module(x, t, encoder_hidden_states=emb, controlnet_cond=c.hint_for(batch, h, w),
                        conditioning_scale=c.strength, return_dict=False, **kw)
        down, mid = _sum(down, d), (m if mid is None else mid + m)
    out: dict[str, Any] = {}
    if down is not None:
        out["down_block_additional_residuals"] = down
        out["mid_block_additional_residual"] = mid
    if intra is not None:
        out["down_intrablock_additional_residuals"] = intra
    return out


def unet_kwargs(entries: list[Any], x: Any, t: Any, dtype: Any) -> dict[str, Any]:
    """The residual kwargs for one UNet call over ``entries`` batched in order (x repeated per entry); {} when no
    entry has an active control. Entries sharing a chain run its ControlNets in one call."""
    import torch

    if not any(getattr(e, "control", ()) for e in entries):
        return {}
    xin = x.to(dtype)
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.control:
            groups.setdefault(id(e.control), []).append(i)
    per_entry: list[dict[str, Any] | None] = [None] * len(entries)
    for idxs in groups.values():
        chain = entries[idxs[0]].control
        n = len(idxs)
        emb = torch.cat([entries[i].emb for i in idxs])
        added = None
        if entries[idxs[0]].added is not None:
            added = {k: torch.cat([entries[i].added[k] for i in idxs]) for k in entries[idxs[0]].added}
        res = _chain_residuals(chain, xin.repeat(n, 1, 1, 1), t, emb, added)
        for j, i in enumerate(idxs):
            per_entry[i] = {k: ([r.chunk(n)[j] for r in v] if isinstance(v, list) else v.chunk(n)[j])
                            for k, v in res.items()}
    template: dict[str, Any] = {}
    for p in per_entry:
        for key, value in (p or {}).items():
            template.setdefault(key, value)
    out: dict[str, Any] = {}
    for key, value in template.items():
        parts = []
        for p in per_entry:
            part = p.get(key) if p else None
            if part is None:
                part = [torch.zeros_like(r) for r in value] if isinstance(value, list) else torch.zeros_like(value)
            parts.append(part)
        out[key] = ([torch.cat([p[k] for p in parts]) for k in range(len(value))] if isinstance(value, list)
                    else torch.cat(parts))
    return out


__all__ = ["Active", "ControlModel", "ControlNet", "UNION_TYPES", "control_modules", "prepare", "unet_kwargs"]
