"""Prompt encoding for HiDream-I1, as HiDreamImagePipeline does it (max_sequence_length 128):

- CLIP-L and CLIP-G: the prompt padded to 128 tokens (or the CLIP's position count, if fewer; longer prompts are
  cut), their projected pooled outputs joined: pooled [1, 768 + 1280].
- T5-XXL: the prompt with its end token, padded to 128 with the attention mask: states [1, 128, 4096].
- Llama-3.1-8B-Instruct: the prompt after ``<|begin_of_text|>``, padded to 128 with ``<|eot_id|>`` and masked; the
  hidden states after each of its 32 layers (the embeddings left out): [1, 32, 128, 4096], which the transformer's
  blocks read layer by layer.
The CONDITIONING entry is (T5 states, {"pooled_output": pooled, "conditioning_llama3": Llama states}), ComfyUI's
names. A missing encoder gives ComfyUI's zeros (pooled parts of 768/1280, T5 [1, 128, 4096], Llama [1, 32, 1, 4096]).
"""

from __future__ import annotations

from typing import Any

#: HiDreamImagePipeline's max_sequence_length: every encoder's token count.
MAX_TOKENS = 128


def _clip_pooled(tokenizer: Any, encoder: Any, text: str, device: Any) -> Any:
    length = min(MAX_TOKENS, int(encoder.config.max_position_embeddings))
    ids = tokenizer(text, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    return encoder(ids.to(device), output_hidden_states=True).text_embeds.float().cpu()


def _masked(tokenizer: Any, text: str, device: Any) -> tuple[Any, Any]:
    out = tokenizer(text, padding="max_length", max_length=min(MAX_TOKENS, int(tokenizer.model_max_length)),
                    truncation=True, add_special_tokens=True, return_tensors="pt")
    return out.input_ids.to(device), out.attention_mask.to(device)


def _t5_states(tokenizer: Any, encoder: Any, text: str, device: Any) -> Any:
    ids, mask = _masked(tokenizer, text, device)
    return encoder(ids, attention_mask=mask)[0].float().cpu()


def _llama_states(tokenizer: Any, encoder: Any, text: str, device: Any) -> Any:
    import torch

    ids, mask = _masked(tokenizer, text, device)
    out = encoder(ids, attention_mask=mask, output_hidden_states=True)
    return torch.stack(out.hidden_states[1:], dim=1).float().cpu()


def encode_hidream(clip: Any, clip_l: str, clip_g: str, t5xxl: str, llama: str, device: Any) -> list[tuple]:
    """A one-entry CONDITIONING for a HiDream CLIP, each encoder with its own prompt (CLIPTextEncodeHiDream)."""
    import torch

    if clip.arch != "hidream" or len(clip.encoders) != 4:
        raise ValueError(f"this CLIP is {clip.arch}, not HiDream's text encoders; load them with "
                         "QuadrupleCLIPLoader (or CLIPLoader/DualCLIPLoader type hidream)")
    (l_tok, g_tok, t_tok, ll_tok), (l_enc, g_enc, t_enc, ll_enc) = clip.tokenizers, clip.encoders
    if all(e is None for e in clip.encoders):
        raise ValueError("this HiDream CLIP holds no text encoder; load CLIP-L, CLIP-G, T5-XXL and Llama-3.1 with "
                         "QuadrupleCLIPLoader")
    with torch.no_grad():
        pooled_l = _clip_pooled(l_tok, l_enc, clip_l, device) if l_enc is not None else torch.zeros(1, 768)
        pooled_g = _clip_pooled(g_tok, g_enc, clip_g, device) if g_enc is not None else torch.zeros(1, 1280)
        t5 = _t5_states(t_tok, t_enc, t5xxl, device) if t_enc is not None else torch.zeros(1, MAX_TOKENS, 4096)
        states = _llama_states(ll_tok, ll_enc, llama, device) if ll_enc is not None else torch.zeros(1, 32, 1, 4096)
    return [(t5, {"pooled_output": torch.cat([pooled_l, pooled_g], dim=-1), "conditioning_llama3": states})]


def encode_hidream_prompt(clip: Any, text: str, device: Any, max_chunks: int = 0) -> list[tuple]:
    """``families.TEXT_ENCODERS`` entry: CLIPTextEncode on a HiDream CLIP (one prompt for all four encoders)."""
    return encode_hidream(clip, text, text, text, text, device)


def encode_hidream_text(ctx: Any, clip: Any, clip_l: str, clip_g: str, t5xxl: str, llama: str) -> list[tuple]:
    """CONDITIONING of CLIPTextEncodeHiDream: the CLIP handle loaded and placed on the device for the encoding."""
    devices = ctx.devices
    with ctx.models.use(clip) as (loaded,):
        if loaded.arch != "hidream":
            raise ValueError(f"CLIPTextEncodeHiDream: this CLIP is {loaded.arch}, not HiDream's text encoders; load "
                             "them with QuadrupleCLIPLoader (or CLIPLoader/DualCLIPLoader type hidream)")
        with devices.use(*[e for e in loaded.encoders if e is not None]):
            return encode_hidream(loaded, clip_l, clip_g, t5xxl, llama, devices.device)


__all__ = ["MAX_TOKENS", "encode_hidream", "encode_hidream_prompt", "encode_hidream_text"]
