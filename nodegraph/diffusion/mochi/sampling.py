"""The Mochi transformer under the shared flow sampling loop (``flow.sampling``/``flow.custom``).

``MochiDenoiser`` is the ``FlowDenoiser`` for ``model.family == "mochi"``. The loop fits the video latent as it is
(``[B, 12, T, h, w]``, normalised by the VAE, scale 1; noise mixed elementwise), so only the transformer call
differs: the latent goes in unpacked, with the timestep ``1000 · (1 - sigma)`` and the T5 states with their
attention mask, as MochiPipeline calls it (ComfyUI: ``t_embedder(1 - sigma)``). Mochi predicts ``x0 - noise``, the
negative of the flow velocity the loop uses (ComfyUI returns ``-x``), so x0 = x + sigma · output; cfg != 1 adds the
negative prediction as usual (ComfyUI's examples use cfg 4.5).
"""

from __future__ import annotations

from typing import Any

from ..flow.sampling import FlowDenoiser, _batch, refuse_controls, refuse_regions, require_conditioning


class MochiDenoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a Mochi transformer on normalised video latents."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None, noise: Any = None) -> None:
        if mask is not None:
            raise ValueError("a noise mask on a Mochi latent is not supported yet; remove SetLatentNoiseMask")
        super().__init__(model, positive, negative, cfg, dtype, device, None, clean, noise)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        width = int(self.transformer.config.text_embed_dim)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "Mochi")
            refuse_controls(extras, what, "Mochi")
            if emb.dim() != 3 or emb.shape[-1] != width:
                raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not T5-XXL's [1, T, {width}]; "
                                 "encode the prompt with CLIPLoader type mochi (t5xxl_fp16.safetensors)")
            mask = extras.get("attention_mask")
            if mask is None:
                mask = emb.new_ones(emb.shape[:2])
            out.append((emb.to(self.device, self.dtype), mask.reshape(1, -1).to(self.device),
                        0.0, [], float(extras.get("strength", 1.0)), None, None))
        return out

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, mask = entry[:2]
        if x.dim() != 5:
            raise ValueError(f"latent_image is an image latent {tuple(x.shape)}, but Mochi samples video latents "
                             "[B, 12, T, h, w]; start from EmptyMochiLatentVideo")
        b = x.shape[0]
        t = torch.full((b,), 1000.0 * (1.0 - float(sigma)), device=x.device, dtype=self.dtype)
        out = self.transformer(hidden_states=x.to(self.dtype), encoder_hidden_states=_batch(emb, b), timestep=t,
                               encoder_attention_mask=_batch(mask, b), return_dict=False)[0]
        return -out.float()


__all__ = ["MochiDenoiser"]
