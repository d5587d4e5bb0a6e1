"""The HunyuanVideo transformer under the shared flow sampling loop (``flow.sampling``/``flow.custom``).

``HunyuanVideoDenoiser`` is the ``FlowDenoiser`` for ``model.family == "hunyuan_video"``. The shared loop fits the
video latent as it is: it scales ``[B, 16, T, h, w]`` by the model's latent format (0.476986, no shift) and mixes noise
elementwise, so only the transformer call differs from Flux's: the latent goes in unpacked (the transformer patches
it), with the timestep sigma · 1000, the Llama states and an all-ones mask, CLIP-L's pooled output and the embedded
guidance × 1000 (FluxGuidance sets it; 6.0 without it, ComfyUI's default for HunyuanVideo) — as
HunyuanVideoPipeline calls it. It predicts the velocity; x0 = x - sigma · v; cfg != 1 adds the negative prediction
as usual ("true" cfg; the model is guidance-distilled, so ComfyUI's graphs keep cfg 1 and set FluxGuidance).
The image-to-video "v1 (concat)" model (33 input channels) takes HunyuanImageToVideo's ``concat_latent_image``
(scaled) and ``1 - concat_mask`` beside the latent, as ComfyUI's HunyuanVideoI2V.
"""

from __future__ import annotations

from typing import Any

from ..flow.sampling import FlowDenoiser, _batch, refuse_regions, require_conditioning

#: ComfyUI's embedded guidance for HunyuanVideo when no FluxGuidance sets one.
DEFAULT_GUIDANCE = 6.0
_UNSUPPORTED = (("guiding_frame_index", "HunyuanImageToVideo's \"v2 (replace)\" guidance"),
                ("ref_latent", "HunyuanImageToVideo's \"custom\" guidance"),
                ("control", "ControlNets"))


class HunyuanVideoDenoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a HunyuanVideo transformer on scaled video latents."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float, dtype: Any, device: Any,
                 mask: Any = None, clean: Any = None, noise: Any = None) -> None:
        if mask is not None:
            raise ValueError("a noise mask on a HunyuanVideo latent is not supported yet; remove SetLatentNoiseMask "
                             "(or the \"v2 (replace)\" guidance of HunyuanImageToVideo)")
        self.flow = model.flow
        super().__init__(model, positive, negative, cfg, dtype, device, None, clean, noise)

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        config = self.transformer.config
        concat = int(config.in_channels) > int(config.out_channels)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "HunyuanVideo")
            for key, label in _UNSUPPORTED:
                if extras.get(key) is not None:
                    raise ValueError(f"{what}: {label} is not supported on HunyuanVideo yet; use the \"v1 (concat)\" "
                                     "image-to-video model and guidance, or remove the node")
            pooled = extras.get("pooled_output")
            if emb.dim() != 3 or emb.shape[-1] != int(config.text_embed_dim) or pooled is None:
                raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not llava-llama-3's "
                                 f"[1, T, {config.text_embed_dim}] with CLIP-L's pooled output; encode the prompt "
                                 "with DualCLIPLoader type hunyuan_video")
            image = extras.get("concat_latent_image")
            if concat and image is None:
                raise ValueError(f"{what}: this HunyuanVideo image-to-video model needs a start image; connect "
                                 "HunyuanImageToVideo (guidance_type \"v1 (concat)\") with a start_image")
            guidance = extras.get("guidance")
            out.append((emb.to(self.device, self.dtype), pooled.to(self.device, self.dtype),
                        DEFAULT_GUIDANCE if guidance is None else float(guidance), [],
                        float(extras.get("strength", 1.0)), image if concat else None,
                        extras.get("concat_mask") if concat else None))
        return out

    def _inputs(self, x: Any, image: Any, mask: Any) -> Any:
        """The latent, and for the concat image-to-video model the scaled image latent and the inverted mask."""
        import torch

        if image is None:
            return x
        b, _, t, h, w = x.shape
        image = _batch(image.float().to(x.device) * self.fmt.scaling_factor, b)
        if tuple(image.shape[-2:]) != (h, w):
            raise ValueError(f"the start image's latent is {tuple(image.shape[-2:])} cells but the video latent is "
                             f"{(h, w)}; give HunyuanImageToVideo the sampled latent's width and height")
        if image.shape[2] != t:  # ComfyUI's concat_cond: zero frames after the image's, or the first t
            padded = image.new_zeros(b, image.shape[1], t, h, w)
            padded[:, :, :min(t, image.shape[2])] = image[:, :, :t]
            image = padded
        keep = x.new_ones(1, 1, t, h, w) if mask is None else \
            1.0 - mask.float().to(x.device).mean(dim=1, keepdim=True)
        return torch.cat([x, image, _batch(keep.expand(-1, 1, t, h, w), b)], dim=1)

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, pooled, guidance, _, _, image, mask = entry
        if x.dim() != 5:
            raise ValueError(f"latent_image is an image latent {tuple(x.shape)}, but HunyuanVideo samples video "
                             "latents [B, 16, T, h, w]; start from EmptyHunyuanLatentVideo (length 1 for a still)")
        b = x.shape[0]
        states = _batch(emb, b)
        t = torch.full((b,), float(self.flow.timestep(sigma)), device=x.device, dtype=self.dtype)
        g = torch.full((b,), guidance * 1000.0, device=x.device, dtype=self.dtype) \
            if self.transformer.config.guidance_embeds else None
        out = self.transformer(hidden_states=self._inputs(x, image, mask).to(self.dtype), timestep=t,
                               encoder_hidden_states=states,
                               encoder_attention_mask=torch.ones(states.shape[:2], device=x.device, dtype=self.dtype),
                               pooled_projections=_batch(pooled, b), guidance=g, return_dict=False)[0]
        return out.float()


__all__ = ["DEFAULT_GUIDANCE", "HunyuanVideoDenoiser"]
