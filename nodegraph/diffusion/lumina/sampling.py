"""Z-Image and Lumina 2 transformers under the flow sampling loop (``flow.sampling``/``flow.custom``).

``ZImageDenoiser``/``Lumina2Denoiser`` are the ``FlowDenoiser`` of ``model.family`` "z_image"/"lumina2". NextDiT
runs time backwards: its time is 1 - the model timestep (``flow.timestep(sigma)``: sigma itself under ComfyUI's
multiplier 1; Z-Image's transformer scales it by 1000 itself), and it predicts the negative velocity, so the
velocity is minus its output (ComfyUI's ``-img``, the pipelines' ``noise_pred = -noise_pred``). Text states go in
with an all-ones mask. cfg and the entry strengths combine as for Flux; a ``RenormCFG`` patch on the MODEL
(ComfyUI's RenormCFG node) replaces cfg with its truncated, norm-capped form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..flow.latents import pad_even
from ..flow.sampling import FlowDenoiser, _batch, refuse_controls, refuse_regions, require_conditioning
from ..patches import ModelPatch, cfg_norm, patches_of
from .controlnet import ZImageFunControl, control_samples


@dataclass(frozen=True)
class RenormCFG(ModelPatch):
    """ComfyUI's RenormCFG: below noise level ``cfg_trunc`` the cfg result is capped at ``renorm_cfg`` times the
    positive's norm (over all of a sample's values; 0 = no cap); at or above it only the positive is used."""

    cfg_trunc: float = 100.0
    renorm_cfg: float = 1.0


class _NextDiTDenoiser(FlowDenoiser):
    """What the two families share: entries, the time convention, RenormCFG."""

    family_name = ""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        self.flow = model.flow
        renorms = [p for p in patches_of(model) if isinstance(p, RenormCFG)]
        self.renorm = renorms[-1] if renorms else None
        super().__init__(model, *args, **kwargs)

    def _text_width(self) -> int:
        return int(self.transformer.config.cap_feat_dim)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        out, width = [], self._text_width()
        for emb, extras in conditioning:
            refuse_regions(extras, what, self.family_name)
            refuse_controls(extras, what, self.family_name)
            if emb.dim() != 3 or emb.shape[-1] != width:
                encoder = "Qwen3-4B (qwen_3_4b)" if self.family_name == "Z-Image" else "Gemma-2-2B (gemma_2_2b)"
                raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not [1, T, {width}] as "
                                 f"{self.family_name} takes; encode the prompt with a CLIPLoader type lumina2 "
                                 f"loading {encoder}")
            limit = int(self.transformer.config.axes_lens[0]) - 64
            if emb.shape[1] > limit:
                raise ValueError(f"{what}: the prompt is {emb.shape[1]:,} tokens long, more than the {limit:,} "
                                 f"{self.family_name} takes here; shorten it")
            out.append((emb.to(self.device, self.dtype), None, None, [], float(extras.get("strength", 1.0)),
                        None, None))
        return out

    def _time(self, x: Any, sigma: float) -> Any:
        import torch

        return torch.full((x.shape[0],), 1.0 - float(self.flow.timestep(sigma)), device=x.device, dtype=self.dtype)

    def __call__(self, x: Any, sigma: Any) -> Any:
        if self.renorm is None or not self.unconds:
            return super().__call__(x, sigma)
        import torch

        cond, uncond = self.split(x, sigma)
        if float(sigma) < self.renorm.cfg_trunc:
            out = uncond + self.cfg * (cond - uncond)
            if self.renorm.renorm_cfg > 0.0:
                dims = tuple(range(1, cond.dim()))
                cap = torch.linalg.vector_norm(cond, dim=dims, keepdim=True) * self.renorm.renorm_cfg
                norm = torch.linalg.vector_norm(out, dim=dims, keepdim=True)
                out = torch.where(norm >= cap, out * (cap / norm), out)
        else:
            out = cond
        for patch in self.norms:
            out = cfg_norm(cond, out, patch.strength)
        return out


class ZImageDenoiser(_NextDiTDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a Z-Image transformer (``ZImageTransformer2DModel``)."""

    family_name = "Z-Image"

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        self.controls = [p for p in patches_of(model) if isinstance(p, ZImageFunControl)]
        super().__init__(model, *args, **kwargs)

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        b, _, h, w = x.shape
        padded = pad_even(x)  # ComfyUI's pad_to_patch_size (circular)
        latents = list(padded.to(self.dtype).unsqueeze(2).unbind(0))
        states = list(_batch(entry[0], b).unbind(0))
        t, extra = self._time(x, sigma), {}
        for control in self.controls:  # ZImageFunControlnet: hints into the transformer's layers
            module = control.controlnet.get().to(self.device, self.dtype)
            hints = control_samples(control, module, self.transformer, latents, t, states, *padded.shape[-2:])
            old = extra.get("controlnet_block_samples") or {}
            extra["controlnet_block_samples"] = {k: v + old[k] if k in old else v for k, v in hints.items()}
        out = self.transformer(latents, t, states, return_dict=False, **extra)[0]
        return -torch.stack([o.float() for o in out]).squeeze(2)[..., :h, :w]


class Lumina2Denoiser(_NextDiTDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a Lumina 2 transformer (``Lumina2Transformer2DModel``)."""

    family_name = "Lumina 2"

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        b, _, h, w = x.shape
        padded = pad_even(x)  # ComfyUI's pad_to_patch_size (circular)
        states = _batch(entry[0], b)
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=x.device)
        out = self.transformer(hidden_states=padded.to(self.dtype), timestep=self._time(x, sigma),
                               encoder_hidden_states=states, encoder_attention_mask=mask, return_dict=False)[0]
        return -out.float()[..., :h, :w]


__all__ = ["Lumina2Denoiser", "RenormCFG", "ZImageDenoiser"]
