"""The Flux.2 transformer under the flow sampling loop (``flow.sampling``/``flow.custom``), and Flux.2's schedule.

``Flux2Denoiser`` is the ``FlowDenoiser`` for ``model.family == "flux2"``: the 128-channel latent (already 2×2
patches, normalised by the VAE wrapper) flattened into one token per cell with 4-axis position ids (t, row,
column, 0), the text states with ids (0, 0, 0, token), the timestep sigma and each entry's "guidance" (FluxGuidance;
3.5 when none is set, as ComfyUI) for the guidance-distilled dev model. An entry's "reference_latents"
(ReferenceLatent, multi-reference editing) follow as more tokens, placed by "reference_latents_method"
(FluxKontextMultiReferenceLatentMethod): "index" (Flux.2's default and Flux2Pipeline's: t = 10, 20, …), "offset"
(t = 1, side by side) or "uxo" (t = 0, beyond the image). It returns x0 = x - sigma * v; cfg and strengths combine
as for Flux.

``flux2_sigmas`` is ComfyUI's Flux2Scheduler (= Flux2Pipeline's default schedule): linspace(1, 0, steps + 1) time-
shifted with the empirical mu of the image's token count and step count.
"""

from __future__ import annotations

import math
from typing import Any

from ..flow.sampling import (
    DEFAULT_GUIDANCE,
    FlowDenoiser,
    _batch,
    refuse_controls,
    refuse_regions,
    require_conditioning,
)

#: Time index step between reference images ("index" method; ComfyUI's ref_index_scale, diffusers' scale).
REF_INDEX_SCALE = 10
REF_METHODS = ("index", "offset", "uxo")


def empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """Flux.2's time shift mu for an image of ``image_seq_len`` latent tokens sampled in ``num_steps`` steps."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if image_seq_len > 4300:
        return float(a2 * image_seq_len + b2)
    m_200 = a2 * image_seq_len + b2
    m_10 = a1 * image_seq_len + b1
    a = (m_200 - m_10) / 190.0
    return float(a * num_steps + (m_200 - 200.0 * a))


def flux2_sigmas(steps: int, width: int, height: int) -> Any:
    """Flux2Scheduler's SIGMAS (float32 CPU tensor, ``steps + 1`` values ending at 0) for a width × height image."""
    import torch

    mu = empirical_mu(round(width * height / (16 * 16)), steps)
    t = torch.linspace(1, 0, steps + 1)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


def _ids(h: int, w: int, t: float = 0.0, h_off: int = 0, w_off: int = 0, device: Any = None) -> Any:
    """Position ids [h · w, 4] (t, row, column, 0) of a latent of h × w cells."""
    import torch

    ids = torch.zeros(h, w, 4)
    ids[..., 0] = t
    ids[..., 1] = torch.arange(h)[:, None] + h_off
    ids[..., 2] = torch.arange(w)[None, :] + w_off
    return ids.reshape(h * w, 4).to(device)


def reference_ids(refs: list, h: int, w: int, method: str, device: Any = None) -> list:
    """Position ids of each reference latent after an h × w image, as ComfyUI's Flux places them for ``method``."""
    out, placed_h, placed_w, index = [], 0, 0, 0
    for ref in refs:
        rh, rw = int(ref.shape[-2]), int(ref.shape[-1])
        if method == "index":
            index += REF_INDEX_SCALE
            out.append(_ids(rh, rw, index, device=device))
        elif method == "uxo":
            out.append(_ids(rh, rw, 0, h + placed_h, w + placed_w, device))
            placed_h, placed_w = placed_h + rh, placed_w + rw
        else:  # offset (Flux Kontext)
            h_off, w_off = (0, placed_w) if rh + placed_h > rw + placed_w else (placed_h, 0)
            out.append(_ids(rh, rw, 1, h_off, w_off, device))
            placed_h, placed_w = max(placed_h, rh + h_off), max(placed_w, rw + w_off)
    return out


class Flux2Denoiser(FlowDenoiser):
    """``denoiser(x, sigma)``: the guided x0 estimate of a Flux.2 transformer."""

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        require_conditioning(conditioning, what)
        width = int(self.transformer.config.joint_attention_dim)
        out = []
        for emb, extras in conditioning:
            refuse_regions(extras, what, "Flux.2")
            refuse_controls(extras, what, "Flux.2")
            if emb.dim() != 3 or emb.shape[-1] != width:
                raise ValueError(f"{what}: the text states are {tuple(emb.shape)}, not Flux.2's [1, T, {width}]; "
                                 "encode the prompt with this model's text encoder (CLIPLoader type flux2)")
            method = str(extras.get("reference_latents_method") or "index")
            if method not in REF_METHODS:
                raise ValueError(f"{what}: reference_latents_method {method!r} is not supported for Flux.2 here; "
                                 f"use one of {', '.join(REF_METHODS)}")
            refs = [r.float() for r in extras.get("reference_latents") or []]
            for ref in refs:
                if ref.dim() != 4 or ref.shape[1] != self.fmt.channels:
                    raise ValueError(f"{what}: a reference latent is {tuple(ref.shape)}, not a Flux.2 latent with "
                                     f"{self.fmt.channels} channels; encode the image with the Flux.2 VAE")
            guidance = extras.get("guidance")
            out.append((emb.to(self.device, self.dtype), None,
                        DEFAULT_GUIDANCE if guidance is None else float(guidance), refs,
                        float(extras.get("strength", 1.0)), method, None))
        return out

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch

        emb, _, guidance, refs, _, method, _ = entry
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2).to(self.dtype)
        count = tokens.shape[1]
        ids = [_ids(h, w, device=x.device)]
        if refs:
            for ref, rid in zip(refs, reference_ids(refs, h, w, method, x.device)):
                r = _batch(ref.to(x.device), b)
                tokens = torch.cat([tokens, r.flatten(2).transpose(1, 2).to(self.dtype)], dim=1)
                ids.append(rid)
        states = _batch(emb, b)
        txt = torch.zeros(states.shape[1], 4, device=x.device)
        txt[:, 3] = torch.arange(states.shape[1], device=x.device)
        t = torch.full((b,), float(sigma), device=x.device, dtype=self.dtype)
        g = torch.full((b,), guidance, device=x.device, dtype=torch.float32) \
            if self.transformer.config.guidance_embeds else None
        out = self.transformer(hidden_states=tokens, timestep=t, guidance=g, encoder_hidden_states=states,
                               txt_ids=txt, img_ids=torch.cat(ids), return_dict=False)[0]
        return out[:, :count].float().transpose(1, 2).reshape(b, c, h, w)


__all__ = ["REF_INDEX_SCALE", "REF_METHODS", "Flux2Denoiser", "empirical_mu", "flux2_sigmas", "reference_ids"]
