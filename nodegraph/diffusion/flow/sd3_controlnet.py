"""SD3/SD3.5 ControlNets (diffusers' ``SD3ControlNetModel``: InstantX's SD3 and SD3.5 ControlNets, the files
ComfyUI's ControlNetLoader reads with ``load_controlnet_mmdit``) — loading and their part of the SD3 model call.

- Files: diffusers' layout (``pos_embed_input.proj.*``, ``controlnet_blocks.N.*``, ``transformer_blocks.N.*``), at the
  root or under ``controlnet.``; the config (width, depth, heads, extra hint channels, SD3.5's q/k norms and dual
  attention, a missing text stream or position embedding) is read from the shapes. Stability's SD3.5 format
  (``sd3.5_large_controlnet_{blur,canny,depth}``: ``transformer_blocks.N.attn.qkv``/``mlp``/``adaLN_modulation``,
  a ``control_type``) is converted as diffusers' conversion script does (single-stream blocks, no text states, the
  transformer's position embedding, heads of 64 channels); its hint is preprocessed as ComfyUI does by type
  (canny: a · 127.5 + 0.5, depth: 1 - a, blur: as is).
- Sampling: the hint image (resized to the latent's pixel size, nearest-exact after a centre crop, as ComfyUI) is
  encoded by the VAE given to ControlNetApplySD3 and scaled as SD3 latents but without the shift (ComfyUI's "SD3
  controlnet weirdness", diffusers' InstantX path); each ControlNet of the chain active at the step's sigma runs on the same
  noisy latent, text states and (unless it forces zeros) pooled output, with its strength as conditioning scale,
  and the per-block outputs of the chain are summed into the transformer's ``block_controlnet_hidden_states``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..detect import UnknownModelError
from .sd3 import SD3_LATENT

MARKERS = ("controlnet_blocks.0.weight", "pos_embed_input.proj.weight")


def is_sd3_controlnet(state: Any) -> bool:
    """Whether tensor names are an SD3/SD3.5 ControlNet's (diffusers' layout, or Stability's SD3.5 one)."""
    return all(m in state or f"controlnet.{m}" in state for m in MARKERS)


def _indices(state: Any, prefix: str, inner: str = "") -> list[int]:
    found = set()
    for k in state:
        if k.startswith(prefix):
            index, _, rest = k[len(prefix):].partition(".")
            if index.isdigit() and rest.startswith(inner):
                found.add(int(index))
    return sorted(found)


def config_from_state(s: dict[str, Any]) -> dict[str, Any]:
    """``SD3ControlNetModel`` config from the shapes of a diffusers-layout state dict."""
    proj = s["pos_embed.proj.weight"].shape
    hidden, in_ch, patch = int(proj[0]), int(proj[1]), int(proj[2])
    norm = s.get("transformer_blocks.0.attn.norm_q.weight")
    head = int(norm.shape[0]) if norm is not None else 64
    pos = s.get("pos_embed.pos_embed")
    ctx = s.get("context_embedder.weight")
    config = {
        "sample_size": 128, "patch_size": patch, "in_channels": in_ch, "out_channels": in_ch,
        "num_layers": len(_indices(s, "transformer_blocks.")), "attention_head_dim": head,
        "num_attention_heads": hidden // head,
        "joint_attention_dim": int(ctx.shape[1]) if ctx is not None else None,
        "caption_projection_dim": int(ctx.shape[0]) if ctx is not None else hidden,
        "pooled_projection_dim": int(s["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
        "extra_conditioning_channels": int(s["pos_embed_input.proj.weight"].shape[1]) - in_ch,
        "dual_attention_layers": tuple(_indices(s, "transformer_blocks.", "attn2.")),
        "qk_norm": "rms_norm" if norm is not None else None,
        "use_pos_embed": pos is not None, "pos_embed_type": "sincos" if pos is not None else None,
        "pos_embed_max_size": math.isqrt(int(pos.shape[-2])) if pos is not None else 96,
        # InstantX's SD3 ControlNets see zeros for the pooled text; SD3.5's (no text stream of their own) see it
        "force_zeros_for_pooled_projection": ctx is not None,
    }
    return config


def sd3_controlnet_from_state(state: dict[str, Any], name: str) -> Any:
    """A ``ControlModel`` (kind "sd3_controlnet", family "sd3") from a ControlNet file's tensors."""
    from diffusers import SD3ControlNetModel

    from ..controlnet_files import ControlModel
    from ..single_file import materialise

    if any(k.startswith("controlnet.") for k in state):
        state = {k[len("controlnet."):]: v for k, v in state.items() if k.startswith("controlnet.")}
    preprocess = None
    try:
        if "transformer_blocks.0.adaLN_modulation.1.weight" in state:  # Stability's SD3.5 format
            state, config, preprocess = _from_stability(state)
        else:
            config = config_from_state(state)
    except KeyError as exc:
        raise UnknownModelError(f"{name} looks like an SD3 ControlNet but lacks {exc}; the file is incomplete") \
            from None
    module = materialise(SD3ControlNetModel.from_config, config, state, None, f"{name}: SD3 ControlNet")
    module.hint_preprocess = preprocess  # read by ``prepare``
    return ControlModel(module, "sd3_controlnet", "sd3", name)


#: ComfyUI's hint preprocessing of Stability's SD3.5 ControlNets by their ``control_type`` (0 blur, 1 canny, 2 depth).
_PREPROCESS = {1: "canny", 2: "depth"}
_BLOCK_NAMES = {"attn.proj": "attn.to_out.0", "mlp.fc1": "ff.net.0.proj", "mlp.fc2": "ff.net.2",
                "adaLN_modulation.1": "norm1.linear", "attn.ln_q": "attn.norm_q", "attn.ln_k": "attn.norm_k"}


def _from_stability(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(diffusers state, config, hint preprocessing) of a ControlNet in Stability's SD3.5 format."""
    import re

    import torch

    state = dict(state)
    kind = state.pop("control_type", None)
    out: dict[str, Any] = {}
    for key, value in state.items():
        m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)", key)
        if m and m.group(2) == "attn.qkv":
            for part, t in zip("qkv", torch.chunk(value, 3, dim=0)):
                out[f"transformer_blocks.{m.group(1)}.attn.to_{part}.{m.group(3)}"] = t.contiguous()
        elif m and m.group(2) in _BLOCK_NAMES:
            out[f"transformer_blocks.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"] = value
        else:
            out[key] = value
    proj = out["pos_embed_input.proj.weight"].shape
    hidden = int(proj[0])
    head = next(d for d in (64, 32, 16, 8, 4, 2, 1) if hidden % d == 0)
    norm = out.get("transformer_blocks.0.attn.norm_q.weight")
    if norm is not None:
        head = int(norm.shape[0])
    config = {"sample_size": 128, "patch_size": int(proj[2]), "in_channels": int(proj[1]),
              "out_channels": int(proj[1]), "num_layers": len(_indices(out, "transformer_blocks.")),
              "attention_head_dim": head, "num_attention_heads": hidden // head, "joint_attention_dim": None,
              "caption_projection_dim": hidden,
              "pooled_projection_dim": int(out["time_text_embed.text_embedder.linear_1.weight"].shape[1]),
              "pos_embed_max_size": None, "pos_embed_type": None, "use_pos_embed": False,
              "qk_norm": "rms_norm" if norm is not None else None, "force_zeros_for_pooled_projection": False}
    return out, config, _PREPROCESS.get(round(float(kind))) if kind is not None else None


@dataclass
class Control:
    """One SD3 ControlNet of a chain, ready for sampling."""

    module: Any
    hint: Any  # IMAGE [B, H, W, C] in 0..1
    vae: Any
    strength: float
    sigma_start: float
    sigma_end: float
    _latents: dict = field(default_factory=dict)

    def latent(self, batch: int, h: int, w: int, device: Any, dtype: Any) -> Any:
        """The hint encoded by the VAE for an ``h`` × ``w`` latent (scaled, no shift), broadcast to ``batch``."""
        key = (batch, h, w)
        if key not in self._latents:
            import torch

            from nodegraph.imaging import resample

            vae = self.vae
            down = int(getattr(vae, "downscale", 8))
            hint = self.hint[..., :3].float()
            if tuple(hint.shape[1:3]) != (h * down, w * down):
                hint = resample(hint.movedim(-1, 1), w * down, h * down, "nearest-exact", "center").movedim(1, -1)
            kind = getattr(self.module, "hint_preprocess", None)
            hint = hint * 127.5 + 0.5 if kind == "canny" else 1.0 - hint if kind == "depth" else hint
            param = next(vae.vae.parameters())
            with torch.no_grad():
                z = vae.vae.encode(hint.movedim(-1, 1).to(param.device, param.dtype) * 2.0 - 1.0).latent_dist.mean
            # the ControlNet's latent format, not the VAE file's: SD3's scale; InstantX's without the shift
            shift = 0.0 if self.module.config.force_zeros_for_pooled_projection else SD3_LATENT.shift_factor
            z = (z.float() - shift) * SD3_LATENT.scaling_factor
            if z.shape[0] != batch:
                z = z.repeat(-(-batch // z.shape[0]), 1, 1, 1)[:batch]
            self._latents[key] = z
        return self._latents[key].to(device, dtype)


def prepare(control: Any, flow: Any, what: str, transformer: Any = None) -> tuple[Control, ...]:
    """The chain of an entry's "control" extra as SD3 ControlNets (TypeError/ValueError with the fix otherwise);
    SD3.5 ControlNets without a position embedding of their own get ``transformer``'s (as diffusers and ComfyUI)."""
    from nodegraph.models.handles import resolve

    from ..controlnet import ControlNet

    if control is None:
        return ()
    if not isinstance(control, ControlNet):
        raise TypeError(f"{what}: the conditioning's 'control' is {type(control).__name__}, not a ControlNet")
    out = []
    for c in control.chain():
        if c.hint is None or c.strength == 0:
            continue
        model = resolve(c.model)
        if getattr(model, "kind", "") != "sd3_controlnet":
            raise ValueError(f"{what}: ControlNet {getattr(model, 'source', '?')!r} was made for "
                             f"{getattr(model, 'family', 'another')} UNet models, not SD3; use an SD3 ControlNet")
        if int(model.module.config.extra_conditioning_channels):
            raise ValueError(f"{what}: {model.source!r} is an inpainting SD3 ControlNet (hint latent + mask), which "
                             "this engine does not run yet; use a ControlNet whose hint is an image")
        if c.vae is None:
            raise ValueError(f"{what}: SD3 ControlNets take their hint as a latent; connect the VAE with "
                             "ControlNetApplySD3 (Apply Controlnet with VAE) or ControlNetApplyAdvanced's vae input")
        if not model.module.config.use_pos_embed and getattr(model.module, "pos_embed", None) is None \
                and transformer is not None:
            param = next(model.module.parameters())
            model.module.pos_embed = model.module._get_pos_embed_from_transformer(transformer).to(param.device,
                                                                                                 param.dtype)
        hint = c.hint if c.hint.dim() == 4 else c.hint[None]
        out.append(Control(model.module, hint, resolve(c.vae), float(c.strength),
                           flow.percent_to_sigma(c.start_percent), flow.percent_to_sigma(c.end_percent)))
    return tuple(out)


def block_states(chain: tuple[Control, ...], x: Any, sigma: float, t: Any, emb: Any, pooled: Any,
                 dtype: Any) -> Any:
    """The summed per-block outputs of the chain's ControlNets active at ``sigma`` for input ``x``; None if none."""
    import torch

    total = None
    b, _, h, w = x.shape
    for c in chain:
        if not c.sigma_end <= sigma <= c.sigma_start:
            continue
        cfg = c.module.config
        cond = c.latent(b, h, w, x.device, dtype)
        out = c.module(hidden_states=x, controlnet_cond=cond, conditioning_scale=c.strength,
                       encoder_hidden_states=emb if cfg.joint_attention_dim is not None else None,
                       pooled_projections=torch.zeros_like(pooled) if cfg.force_zeros_for_pooled_projection
                       else pooled, timestep=t, return_dict=False)[0]
        total = list(out) if total is None else [a + o for a, o in zip(total, out)]
    return total


__all__ = [
    "MARKERS",
    "Control",
    "block_states",
    "config_from_state",
    "is_sd3_controlnet",
    "prepare",
    "sd3_controlnet_from_state",
]
