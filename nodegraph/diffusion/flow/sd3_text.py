"""SD3's text encoders: CLIP-L, CLIP-G (OpenCLIP bigG as transformers' CLIPTextModelWithProjection) and T5-XXL, any
of them missing, combined as ComfyUI's SD3 CLIP does (and StableDiffusion3Pipeline, when all three are there).

- CLIP-L: the penultimate layer's states [1, 77, 768] and the pooled output before the projection (ComfyUI's
  ``return_projected_pooled=False``); CLIP-G: penultimate states [1, 77, 1280] and the projected pooled output.
  Both get the prompt in one 77-token window (longer prompts are cut, as the pipeline cuts them); CLIP-L pads with
  its end token, CLIP-G with "!" (id 0), as their tokenizers in the SD3 release.
- The CLIP states are joined on the channels (a missing CLIP-L leaves zeros in the first 768), padded with zeros to
  T5's width (4096) and followed by T5's states (the prompt with its end token, padded with ``<pad>`` to at least
  77 tokens, no attention mask). Pooled = CLIP-L ⊕ CLIP-G (zeros for a missing one). Nothing: zeros [1, 77, 4096].
- CLIPTextEncodeSD3's ``empty_padding`` "none" leaves out an empty prompt's encoders instead of encoding "".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..types import TextEncoder

T5_MIN_LENGTH = 77
#: The order of an SD3 CLIP's tokenizers and encoders (None where the encoder is missing).
SLOTS = ("clip_l", "clip_g", "t5xxl")


def sd3_clip(loaded: dict[str, tuple[Any, Path]], names: list[str]) -> TextEncoder:
    """An SD3 CLIP from loaded encoders {kind: (model, path)} (any subset of CLIP-L, CLIP-G, T5-XXL)."""
    from ..loading import clip_tokenizer
    from .loading import t5_tokenizer

    if not loaded:
        raise ValueError("type sd3 takes CLIP-L, CLIP-G and/or T5-XXL text encoder files; none was given")
    tokenizers = (clip_tokenizer() if "clip_l" in loaded else None,
                  clip_tokenizer(pad_token="!") if "clip_g" in loaded else None,
                  t5_tokenizer(loaded["t5xxl"][1]) if "t5xxl" in loaded else None)
    encoders = tuple(loaded[k][0] if k in loaded else None for k in SLOTS)
    return TextEncoder(tokenizers=tokenizers, encoders=encoders, arch="sd3")


def _clip(tokenizer: Any, encoder: Any, text: str, device: Any, projected: bool) -> tuple[Any, Any]:
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out = encoder(ids.to(device), output_hidden_states=True)
    pooled = out.text_embeds if projected else out.pooler_output
    return out.hidden_states[-2].float().cpu(), pooled.float().cpu()


def encode_sd3(clip: TextEncoder, clip_l: str, clip_g: str, t5xxl: str, device: Any, max_chunks: int = 8,
               empty_padding: str = "empty_prompt") -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for an SD3 CLIP: ``clip_l``/``clip_g``/``t5xxl`` feed their encoders."""
    import torch
    import torch.nn.functional as F

    from .text import t5_states

    if clip.arch != "sd3" or len(clip.encoders) != 3:
        raise ValueError("this CLIP is not an SD3 text encoder set; load it with TripleCLIPLoader, or "
                         "DualCLIPLoader/CLIPLoader type sd3")
    (l_tok, g_tok, t_tok), (l_enc, g_enc, t_enc) = clip.tokenizers, clip.encoders
    if l_enc is None and g_enc is None and t_enc is None:
        raise ValueError("this SD3 CLIP holds no text encoder (the checkpoint ships without them); load CLIP-L, "
                         "CLIP-G and T5-XXL with TripleCLIPLoader and connect its CLIP instead")
    skip = empty_padding == "none"
    out = pooled = None
    with torch.no_grad():
        if not (skip and clip_l == "" and clip_g == ""):
            states, l_pooled = (_clip(l_tok, l_enc, clip_l, device, False) if l_enc is not None
                                else (None, torch.zeros(1, 768)))
            g_pooled = torch.zeros(1, 1280)
            if g_enc is not None:
                g_states, g_pooled = _clip(g_tok, g_enc, clip_g, device, True)
                states = torch.cat([states, g_states], -1) if states is not None else F.pad(g_states, (768, 0))
            if states is not None:
                width = int(t_enc.config.d_model) if t_enc is not None else 4096  # T5's width (4096)
                out = F.pad(states, (0, width - states.shape[-1]))
            pooled = torch.cat([l_pooled, g_pooled], -1)
        if t_enc is not None and not (skip and t5xxl == ""):
            t5 = t5_states(t_tok, t_enc, t5xxl, device, max_chunks, getattr(clip, "options", ()), T5_MIN_LENGTH)
            out = t5 if out is None else torch.cat([out, t5], -2)
    if out is None:
        out = torch.zeros(1, 77, 4096)
    if pooled is None:
        pooled = torch.zeros(1, 768 + 1280)
    return [(out, {"pooled_output": pooled})]


__all__ = ["SLOTS", "T5_MIN_LENGTH", "encode_sd3", "sd3_clip"]
