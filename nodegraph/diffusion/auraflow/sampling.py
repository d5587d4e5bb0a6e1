"""The AuraFlow transformer under the flow sampling loop (``flow.sampling``/``flow.custom``).

``AuraDenoiser`` is the ``FlowDenoiser`` for ``model.family == "auraflow"``: the latent [B, 4, h, w] goes in as it is
(padded to even sides; the transformer patchifies it), with the Pile-T5 states and the model time
``flow.timestep(sigma)`` (sigma itself under ComfyUI's AuraFlow sampling, multiplier 1; diffusers' pipeline passes
t / 1000, the same number). It returns x0 = x - sigma * v; cfg and the entry strengths combine as for Flux.
"""

from __future__ import annotations

from typing import Any

from ..flow.latents import pad_even
from ..flow.sampling import FlowDenoiser, _batch, refuse_controls, refuse_regions, require_conditioning


def text_entries(conditioning: list, what: str, width: int, family: str, loader: str, device: Any,
                 dtype: Any) -> list[tuple]:
    """Denoiser entries (states, strength) of a T5-only family's CONDITIONING, with clear errors for what does not
    apply (regions, ControlNets, another encoder's states)."""
    require_conditioning(conditioning, what)
    out = []
    for emb, extras in conditioning:
        refuse_regions(extras, what, family)
        refuse_controls(extras, what, family)
        if emb.dim() != 3 or emb.shape[-1] != width:
            raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not {family}'s [1, T, {width}]; "
                             f"encode the prompt with {loader}")
        out.append((emb.to(device, dtype), float(extras.get("strength", 1.0))))
    return out


class AuraDenoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of an AuraFlow transformer."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        self.flow = model.flow
        super().__init__(model, *args, **kwargs)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        width = int(self.transformer.config.joint_attention_dim)
        entries = text_entries(conditioning, what, width, "AuraFlow", "its checkpoint's CLIP (Pile-T5-XL)",
                               self.device, self.dtype)
        return [(emb, None, None, (), strength, None, None) for emb, strength in entries]

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        b, _, h, w = x.shape
        t = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=self.dtype)
        out = self.transformer(hidden_states=pad_even(x).to(self.dtype), encoder_hidden_states=_batch(entry[0], b),
                               timestep=t, return_dict=False)[0]
        return out[:, :, :h, :w].float()


__all__ = ["AuraDenoiser", "text_entries"]
