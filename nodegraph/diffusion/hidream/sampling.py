"""The HiDream transformer under the flow sampling loop (``flow.sampling``/``flow.custom``).

``HiDreamDenoiser`` is the ``FlowDenoiser`` for ``model.family == "hidream"``. As HiDreamImagePipeline calls it: the
latent [B, 16, h, w] (the transformer patches it itself; a non-square latent is padded to the model's maximum of
4096 patch tokens, 1024² pixels, with its keys masked, as the pipeline does), the model time sigma × 1000
(``flow.timestep``, ComfyUI's ModelSamplingSD3 multiplier), the T5 states, every Llama layer's states
[layers, B, T, 4096] and the pooled CLIP-L ⊕ CLIP-G output; the velocity is the negated output. Latents larger than
that maximum, and HiDream-E1's edit input (an entry's "concat_latent_image", InstructPixToPixConditioning: the source
latent beside the latent, on the width, as ComfyUI's HiDream does), go in as patch tokens without padding. It
returns x0 = x - sigma * v; cfg and the entry strengths combine as for Flux.
"""

from __future__ import annotations

from typing import Any

from ..flow.latents import pad_even
from ..flow.sampling import FlowDenoiser, _batch, refuse_controls, refuse_regions, require_conditioning

_HOW = "encode the prompt with HiDream's text encoders (QuadrupleCLIPLoader, or CLIPLoader/DualCLIPLoader type hidream)"


class HiDreamDenoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a HiDream transformer."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        self.flow = model.flow
        super().__init__(model, *args, **kwargs)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        config = self.transformer.config
        layers = max(config.llama_layers) + 1
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "HiDream")
            refuse_controls(extras, what, "HiDream")
            pooled, llama = extras.get("pooled_output"), extras.get("conditioning_llama3")
            if llama is None or pooled is None or emb.dim() != 3 or emb.shape[-1] != config.caption_channels[0]:
                raise ValueError(f"{what}: the conditioning is not HiDream's (T5 states [1, T, "
                                 f"{config.caption_channels[0]}], pooled CLIP output and Llama states); {_HOW}")
            if llama.dim() != 4 or llama.shape[1] < layers or llama.shape[-1] != config.caption_channels[1] \
                    or pooled.shape[-1] != config.text_emb_dim:
                raise ValueError(f"{what}: the Llama states are {tuple(llama.shape)} and the pooled output "
                                 f"{tuple(pooled.shape)}, but this model reads {layers} Llama layers "
                                 f"{config.caption_channels[1]} wide and a pooled output of {config.text_emb_dim}; "
                                 f"{_HOW}, all four files of the same HiDream release")
            image = extras.get("concat_latent_image")
            out.append((emb.to(self.device, self.dtype), pooled.to(self.device, self.dtype),
                        llama.to(self.device, self.dtype), [], float(extras.get("strength", 1.0)), image, None))
        return out

    def _tokens(self, x: Any) -> dict[str, Any]:
        """The transformer's patch-token inputs for ``x`` (even sides), unpadded: every token is real."""
        import torch

        b, c, h, w = x.shape
        ph, pw = h // 2, w // 2
        tokens = x.reshape(b, c, ph, 2, pw, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, ph * pw, 4 * c)
        ids = torch.zeros(ph, pw, 3, device=x.device)
        ids[..., 1] = torch.arange(ph, device=x.device)[:, None]
        ids[..., 2] = torch.arange(pw, device=x.device)[None, :]
        return {"hidden_states": tokens, "hidden_states_masks": torch.ones(b, ph * pw, device=x.device,
                                                                            dtype=x.dtype),
                "img_ids": ids.reshape(1, ph * pw, 3).repeat(b, 1, 1), "img_sizes": [(ph, pw)] * b}

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch
        import torch.nn.functional as F

        emb, pooled, llama, _, _, image, _ = entry
        b, _, h, w = x.shape
        hidden = pad_even(x)
        if image is not None:  # HiDream-E1: the source latent to the right of the latent
            image = (image.float().to(x.device) - self.fmt.shift_factor) * self.fmt.scaling_factor
            if image.shape[-2:] != x.shape[-2:]:
                image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)
            hidden = pad_even(torch.cat([x, _batch(image, b)], dim=-1))
        hidden = hidden.to(self.dtype)
        ph, pw = hidden.shape[-2] // 2, hidden.shape[-1] // 2
        as_pipeline = image is None and (ph == pw or ph * pw <= self.transformer.max_seq)  # it pads to max_seq
        inputs = {"hidden_states": hidden} if as_pipeline else self._tokens(hidden)
        t = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=torch.float32)
        out = self.transformer(timesteps=t, encoder_hidden_states_t5=_batch(emb, b),
                               encoder_hidden_states_llama3=_batch(llama, b).movedim(1, 0),
                               pooled_embeds=_batch(pooled, b), return_dict=False, **inputs)[0]
        return -out[:, :, :h, :w].float()


__all__ = ["HiDreamDenoiser"]
