"""The Qwen-Image transformer under the flow sampling loop (``flow.sampling``/``flow.custom``).

``QwenDenoiser`` is the ``FlowDenoiser`` for ``model.family == "qwen_image"``: the latent packed into 2×2-patch
tokens (the same packing as Flux), ``img_shapes`` for the transformer's rotary positions, the text states with an
all-ones mask, and the model time ``flow.timestep(sigma)`` (sigma itself under ComfyUI's Qwen-Image/AuraFlow
sampling, multiplier 1). An entry's "reference_latents" (Qwen-Image-Edit) follow the latent's tokens, each with
its own entry in ``img_shapes``, as QwenImageEditPipeline does. It returns x0 = x - sigma * v; cfg and the entry
strengths combine as for Flux.
"""

from __future__ import annotations

from typing import Any

from ..flow.latents import pack, pad_even, unpack
from ..flow.sampling import FlowDenoiser, _batch, refuse_regions, require_conditioning


class QwenDenoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a Qwen-Image transformer."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        self.flow = model.flow
        super().__init__(model, *args, **kwargs)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "Qwen-Image")
            if emb.dim() != 3 or emb.shape[-1] != int(self.transformer.config.joint_attention_dim):
                raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not Qwen2.5-VL's "
                                 f"[1, T, {self.transformer.config.joint_attention_dim}]; encode the prompt with a "
                                 "CLIPLoader type qwen_image text encoder")
            refs = [r.float() for r in extras.get("reference_latents") or []]  # normalised, as the model's
            out.append((emb.to(self.device, self.dtype), None, None, refs, float(extras.get("strength", 1.0)),
                        None, None))
        return out

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, refs = entry[0], entry[3]
        b, c, h, w = x.shape
        tokens = pack(pad_even(x)).to(self.dtype)
        count = tokens.shape[1]
        shape = [(1, (h + 1) // 2, (w + 1) // 2)]
        for ref in refs:  # Qwen-Image-Edit: reference latents as more image tokens, each with its own shape
            tokens = torch.cat([tokens, pack(pad_even(_batch(ref.to(x.device), b))).to(self.dtype)], dim=1)
            shape.append((1, (ref.shape[-2] + 1) // 2, (ref.shape[-1] + 1) // 2))
        shapes = [shape] * b
        states = _batch(emb, b)
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=x.device)
        t = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=self.dtype)
        out = self.transformer(hidden_states=tokens, timestep=t, encoder_hidden_states=states,
                               encoder_hidden_states_mask=mask, img_shapes=shapes, return_dict=False)[0]
        return unpack(out[:, :count].float(), c, h, w)


__all__ = ["QwenDenoiser"]
