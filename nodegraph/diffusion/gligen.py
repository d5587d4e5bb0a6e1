"""GLIGEN: grounded text boxes (ComfyUI's GLIGENLoader / GLIGENTextBoxApply) on diffusers' GLIGEN modules.

A GLIGEN file (ComfyUI's layout, e.g. ``gligen_sd14_textbox_pruned.safetensors``) holds a ``position_net`` (box +
phrase → grounding tokens, diffusers' ``GLIGENTextBoundingboxProjection``) and one gated self-attention layer per
transformer block (``…input_blocks.N.1.transformer_blocks.0.fuser.*``, diffusers' ``GatedSelfAttentionDense``; the
same tensor names). GLIGENTextBoxApply records ``extras["gligen"] = ("position", Gligen, [Box, …])`` on each entry
of a CONDITIONING. While sampling, every UNet call over entries with boxes (``call``) attaches the layers to the
UNet's transformer blocks (``fuser``) and the ``position_net`` for that call and passes the boxes as diffusers'
``cross_attention_kwargs={"gligen": {...}}``; entries without boxes run without them (ComfyUI's ``middle_patch``
goes only to the entries that have one), so the two never share a batched call.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

MAX_OBJS = 30  # boxes per entry (ComfyUI's and diffusers' max_objs)
_SECTIONS = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
_FUSER = re.compile(r"(input_blocks|middle_block|output_blocks)\.(\d+)\..*\.fuser\.(.+)$")


@dataclass(frozen=True)
class Box:
    """One grounded phrase: its pooled text embedding [1, D] and its box in pixels."""

    pooled: Any
    height: int
    width: int
    y: int
    x: int


@dataclass(frozen=True, eq=False)
class Gligen:
    """GLIGEN: the position net and the gated self-attention layers in the UNet's transformer-block order."""

    position_net: Any  # diffusers GLIGENTextBoundingboxProjection
    fusers: Any  # torch.nn.ModuleList of diffusers GatedSelfAttentionDense
    key_dim: int  # width of the phrase embeddings (768 for SD1.x)
    source: str = ""

    @property
    def nbytes(self) -> int:
        """Approximate memory held."""
        return sum(int(p.element_size() * p.numel()) for m in (self.position_net, self.fusers)
                   for p in m.parameters())


def load_gligen(state: dict[str, Any], name: str = "") -> Gligen:
    """A Gligen from a GLIGEN state dict (ComfyUI's/the original layout, with or without ``model.diffusion_model.``)."""
    import torch
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    layers: dict[tuple[int, int], dict[str, Any]] = {}
    pos: dict[str, Any] = {}
    for key, value in state.items():
        m = _FUSER.search(key)
        if m is not None:
            layers.setdefault((_SECTIONS[m.group(1)], int(m.group(2))), {})[m.group(3)] = value
        elif "position_net." in key:
            pos[key.split("position_net.", 1)[1]] = value
    if not layers or "null_positive_feature" not in pos:
        raise ValueError(f"GLIGENLoader: {name or 'the file'} is not a GLIGEN model (no position_net and "
                         "…fuser.* tensors); use a GLIGEN textbox model such as gligen_sd14_textbox_pruned")
    fusers = []
    key_dim = 768
    for _, sd in sorted(layers.items()):
        query_dim, key_dim = (int(v) for v in sd["linear.weight"].shape)
        heads = 8 if key_dim == 768 else max(1, query_dim // 64)  # ComfyUI's rule (attach() takes the block's)
        fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, query_dim // heads)
        fuser.load_state_dict(sd)
        fusers.append(fuser)
    net = GLIGENTextBoundingboxProjection(int(pos["null_positive_feature"].shape[0]),
                                          int(pos["linears.4.weight"].shape[0]), feature_type="text-only")
    net.load_state_dict(pos)
    return Gligen(net.eval(), torch.nn.ModuleList(fusers).eval(), key_dim, name)


def load_gligen_file(path: Any, allow_pickle: bool = False, name: str = "") -> Gligen:
    """A Gligen from a GLIGEN file (.safetensors; a pickle only with ``allow_pickle``)."""
    from .loading import load_state_dict

    return load_gligen(load_state_dict(path, allow_pickle), name)


def phrase_embedding(clip: Any, text: str) -> Any:
    """The pooled (unprojected) embedding [1, D] of ``text`` by the first text encoder of a CLIP (``TextEncoder``),
    what GLIGEN grounds a box with (ComfyUI's ``return_pooled="unprojected"``, diffusers' ``pooler_output``)."""
    import torch

    tokenizer, encoder = clip.tokenizers[0], clip.encoders[0]
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    param = next(encoder.parameters())
    with torch.no_grad():
        return encoder(ids.to(param.device)).pooler_output[:1].float().cpu()


def transformer_blocks(unet: Any) -> list[Any]:
    """The UNet's BasicTransformerBlocks in the order its forward pass runs them (down, mid, up)."""
    from diffusers.models.attention import BasicTransformerBlock

    parts = [*unet.down_blocks, *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks]
    return [m for part in parts for m in part.modules() if isinstance(m, BasicTransformerBlock)]


def gligen_of(extras: dict[str, Any]) -> Any:
    """The ``(Gligen, boxes)`` an entry's extras carry, or None."""
    value = extras.get("gligen")
    if value is None:
        return None
    kind, model, boxes = value
    return (model, tuple(boxes)) if kind == "position" and boxes else None


def prepare(extras: dict[str, Any], batch: int, latent_hw: tuple[int, int], downscale: int, device: Any,
            dtype: Any) -> tuple[Gligen, dict[str, Any]] | None:
    """(Gligen, position_net inputs [batch, 30, …]: normalised xyxy boxes, phrase embeddings, masks) of one
    CONDITIONING entry with GLIGEN boxes, on ``device``; None for an entry without."""
    import torch

    found = gligen_of(extras)
    if found is None:
        return None
    model, boxes = found
    h, w = latent_hw
    coords = torch.zeros(MAX_OBJS, 4)
    embs = torch.zeros(MAX_OBJS, model.key_dim)
    masks = torch.zeros(MAX_OBJS)
    for i, box in enumerate(boxes[:MAX_OBJS]):  # ComfyUI: in latent cells (pixels // 8), over the latent's size
        x, y, bw, bh = box.x // downscale, box.y // downscale, box.width // downscale, box.height // downscale
        coords[i] = torch.tensor((x / w, y / h, (x + bw) / w, (y + bh) / h))
        embs[i] = box.pooled.reshape(-1).float()
        masks[i] = 1.0
    return model, {"boxes": coords.expand(batch, -1, -1).to(device, dtype),
                   "positive_embeddings": embs.expand(batch, -1, -1).to(device, dtype),
                   "masks": masks.expand(batch, -1).to(device, dtype)}


def batchable(entries: list[Any]) -> bool:
    """Whether entries may share one UNet call: all without boxes, or all with the same GLIGEN model."""
    first = getattr(entries[0], "gligen", None)
    return all((getattr(e, "gligen", None) is None) == (first is None) and
               (first is None or e.gligen[0] is first[0]) for e in entries)


@contextmanager
def attached(unet: Any, model: Gligen, device: Any, dtype: Any) -> Iterator[None]:
    """``model``'s layers on ``unet``'s transformer blocks (``fuser``) and its ``position_net``, then removed."""
    blocks = transformer_blocks(unet)
    if len(blocks) != len(model.fusers):
        raise ValueError(f"GLIGEN {model.source}: it has {len(model.fusers)} gated layers but this UNet has "
                         f"{len(blocks)} transformer blocks; use a GLIGEN made for this model family (SD1.x)")
    model.fusers.to(device, dtype)
    model.position_net.to(device, dtype)
    added = [b for b in blocks if not hasattr(b, "fuser")]
    had_net = hasattr(unet, "position_net")
    old = [(b, b.fuser) for b in blocks if hasattr(b, "fuser")]
    try:
        for block, fuser in zip(blocks, model.fusers):
            fuser.attn.heads = block.attn1.heads  # the block's heads: ComfyUI's rule for SD1.x/2.x, any for others
            block.fuser = fuser
        unet.position_net = model.position_net
        yield
    finally:
        for block in added:
            del block.fuser
        for block, fuser in old:
            block.fuser = fuser
        if not had_net:
            del unet.position_net


def call(unet: Any, entries: list[Any], x: Any, t: Any, **kw: Any) -> Any:
    """``unet(x, t, **kw)`` over ``entries`` batched in order, with their GLIGEN boxes when they have them."""
    import torch

    first = getattr(entries[0], "gligen", None)
    if first is None:
        return unet(x, t, **kw)
    args = {k: torch.cat([e.gligen[1][k] for e in entries]).to(x.dtype) for k in first[1]}
    with attached(unet, first[0], x.device, x.dtype):
        return unet(x, t, cross_attention_kwargs={"gligen": args}, **kw)
