"""A1111 hypernetworks (ComfyUI's HypernetworkLoader): per-width MLPs added to the key and value inputs of the UNet's
transformer attentions.

A hypernetwork holds, for each feature width it serves (320, 640, 768, 1280 for SD1.x), two MLPs: one for the key
input and one for the value input of an attention. Where an attention's key/value input has that width (the
self-attention's normalised hidden states, the cross-attention's text embeddings), ComfyUI's attn1/attn2 patch
replaces ``k`` by ``k + mlp_k(k) * strength`` and ``v`` by ``v + mlp_v(v) * strength`` before the projections;
``install`` does the same with an attention processor on every transformer block's ``attn1``/``attn2`` for a run.

Files: ``.safetensors`` with tensors ``<width>.<0|1>.<layer>.weight|bias`` (A1111's ``linear.N`` layers) and
A1111's options (``activation_func``, ``is_layer_norm``, ``use_dropout``, ``activate_output``,
``last_layer_dropout``) in the metadata; A1111's own ``.pt`` files only with ``allow_unsafe_pickle`` (read with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "softsign", "mish")
OPTIONS = ("activation_func", "is_layer_norm", "use_dropout", "activate_output", "last_layer_dropout")


@dataclass(frozen=True, eq=False)
class Hypernetwork:
    """A hypernetwork applied with a strength (a MODEL patch): ``nets`` maps a width to its (key, value) MLPs."""

    name: str
    nets: Any  # torch.nn.ModuleDict {str(width): ModuleList([mlp_k, mlp_v])}
    strength: float = 1.0


def _activation(name: str) -> Any:
    import torch

    return {"relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU, "swish": torch.nn.Hardswish,
            "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "softsign": torch.nn.Softsign,
            "mish": torch.nn.Mish}[name]()


def _order(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def _mlp(weights: dict[str, Any], options: dict[str, Any]) -> Any:
    """One MLP as ComfyUI builds it: Linear layers (each with its LayerNorm when ``is_layer_norm``), activations
    between them (after the last too with ``activate_output``); dropout is inactive at inference."""
    import torch

    names = sorted((k[:-len(".weight")] for k in weights if k.endswith(".weight")), key=_order)
    act = str(options["activation_func"])
    layers: list[Any] = []
    i = 0
    while i < len(names):
        w, b = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
        linear = torch.nn.Linear(int(w.shape[1]), int(w.shape[0]))
        linear.load_state_dict({"weight": w, "bias": b})
        layers.append(linear)
        if act != "linear" and (i != len(names) - 1 or options["activate_output"]):
            layers.append(_activation(act))
        if options["is_layer_norm"]:
            i += 1
            nw, nb = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
            norm = torch.nn.LayerNorm(int(nw.shape[0]))
            norm.load_state_dict({"weight": nw, "bias": nb})
            layers.append(norm)
        i += 1
    return torch.nn.Sequential(*layers)


def _truthy(value: Any) -> bool:
    return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)


def nets_from(tensors: dict[str, dict[int, dict[str, Any]]], options: dict[str, Any], name: str = "") -> Any:
    """The ModuleDict of a hypernetwork: ``tensors[width][0|1]`` are the key/value MLPs' tensors."""
    import torch

    opts = {"activation_func": str(options.get("activation_func") or "linear"),
            **{k: _truthy(options.get(k, False)) for k in OPTIONS[1:]}}
    if opts["activation_func"] not in ACTIVATIONS:
        raise ValueError(f"HypernetworkLoader: {name} uses activation {opts['activation_func']!r}, which ComfyUI "
                         f"does not support either; supported: {', '.join(ACTIVATIONS)}")
    if not tensors:
        raise ValueError(f"HypernetworkLoader: {name} holds no <width>.<0|1>.* tensors; is it a hypernetwork?")
    nets = torch.nn.ModuleDict()
    for width, pair in sorted(tensors.items()):
        if set(pair) != {0, 1}:
            raise ValueError(f"HypernetworkLoader: {name}: width {width} needs a key (0) and a value (1) network")
        nets[str(width)] = torch.nn.ModuleList([_mlp(pair[0], opts), _mlp(pair[1], opts)])
    return nets.eval()


def load_hypernetwork(path: Path, allow_pickle: bool = False) -> Any:
    """The nets of a hypernetwork file (.safetensors; A1111's .pt only with ``allow_pickle``)."""
    from .loading import check_loadable

    path = Path(path)
    check_loadable(path, allow_pickle)
    tensors: dict[int, dict[int, dict[str, Any]]] = {}
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            options = dict(f.metadata() or {})
            for key in f.keys():
                width, index, rest = key.split(".", 2)
                tensors.setdefault(int(width), {}).setdefault(int(index), {})[rest] = f.get_tensor(key)
    else:
        import torch

        data = torch.load(str(path), map_location="cpu", weights_only=True)
        options = {k: data.get(k) for k in OPTIONS if k in data}
        for key, pair in data.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                tensors[int(key)] = {i: dict(pair[i]) for i in (0, 1)}
    return nets_from(tensors, options, path.name)


class _Processor:
    """Attention with the hypernetworks' key/value transforms (chained) where a net has the input's width, else
    ``original``."""

    def __init__(self, patches: list[Hypernetwork], original: Any) -> None:
        self.patches, self.original = patches, original

    def __call__(self, attn: Any, hidden_states: Any, encoder_hidden_states: Any = None, attention_mask: Any = None,
                 *args: Any, **kwargs: Any) -> Any:
        import torch.nn.functional as F

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        hits = [p for p in self.patches if str(context.shape[-1]) in p.nets]
        if (not hits or hidden_states.ndim != 3 or attn.group_norm is not None
                or attn.spatial_norm is not None or attn.residual_connection or attn.norm_cross):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        k_in = v_in = context
        for patch in self.patches:  # as ComfyUI's patch list: each sees the previous one's k and v
            if str(k_in.shape[-1]) in patch.nets:
                mlp_k, mlp_v = patch.nets[str(k_in.shape[-1])]
                k_in, v_in = k_in + mlp_k(k_in) * patch.strength, v_in + mlp_v(v_in) * patch.strength
        batch, heads = hidden_states.shape[0], attn.heads
        query = attn.to_q(hidden_states)
        key, value = attn.to_k(k_in), attn.to_v(v_in)
        dim = key.shape[-1] // heads
        q, k, v = (t.view(batch, -1, heads, dim).transpose(1, 2) for t in (query, key, value))
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], batch).view(batch, heads, -1, k.shape[2])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(batch, -1, heads * dim)
        out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def install(unet: Any, patches: list[Hypernetwork]) -> Iterator[None]:
    """``patches`` on every transformer block's self- and cross-attention of ``unet`` for the block, then removed."""
    from diffusers.models.attention import BasicTransformerBlock

    param = next(unet.parameters())
    for patch in patches:
        patch.nets.to(param.device, param.dtype)
    swapped = []
    for block in unet.modules():
        if isinstance(block, BasicTransformerBlock):
            for attn in (block.attn1, block.attn2):
                if attn is not None:
                    original = attn.processor
                    attn.set_processor(_Processor(list(patches), original))
                    swapped.append((attn, original))
    try:
        yield
    finally:
        for attn, original in reversed(swapped):
            attn.set_processor(original)
