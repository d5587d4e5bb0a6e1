"""HunyuanVideo's text encoders (DualCLIPLoader type ``hunyuan_video``): CLIP-L (pooled) + llava-llama-3-8b's
language model (hidden states), and the prompt encoding HunyuanVideoPipeline and ComfyUI share.

- Files: ``clip_l.safetensors`` (any CLIP-L layout ``flow.loading`` reads) and the Llama file (ComfyUI's
  ``llava_llama3_fp16``/``fp8_scaled``: ``model.layers.*``; transformers' ``LlamaModel``/``LlavaForConditionalGeneration``
  names also load; a vision tower in the file is ignored). The config comes from the shapes (head width 128).
- Tokenizer: Llama 3's tokenizer is under Meta's licence, so it is not shipped; it is read from a
  ``llama_tokenizer/`` or ``tokenizer/`` folder beside the Llama file (the ``tokenizer/`` folder of the
  hunyuanvideo-community/HunyuanVideo or xtuner/llava-llama-3-8b release: tokenizer.json + tokenizer_config.json).
- Encoding: the prompt in the video template (system message, then the user turn), through Llama; the hidden states
  of the third-from-last layer (``hidden_states[-3]``) for the user's tokens and their ``<|eot_id|>`` (the template's
  95 leading tokens cropped, no padding — ComfyUI's tokens; HunyuanVideoPipeline pads to 256 with a mask, which the
  transformer ignores). CLIP-L gets the prompt in its 77-token window; its pooled output is the "pooled_output".
The CONDITIONING entry is (states [1, T, 4096], {"pooled_output": [1, 768]}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..detect import Header, UnknownModelError, read_header
from ..flow.loading import strip_prefix
from ..types import TextEncoder
from .files import shipped_config

TEMPLATE = ("<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
            "1. The main content and theme of the video.2. The color, shape, size, texture, quantity, text, and "
            "spatial relationships of the objects.3. Actions, events, behaviors temporal relationships, physical "
            "movement changes of the objects.4. background environment, light, style and atmosphere.5. camera "
            "angles, movements, and transitions used in the video:<|eot_id|><|start_header_id|>user<|end_header_id|>"
            "\n\n{}<|eot_id|>")
#: hidden_states index of the states used (the pipeline's num_hidden_layers_to_skip = 2; ComfyUI's layer_idx -3).
LAYER = -3
HEAD_DIM = 128
#: Longest prompt accepted, in Llama tokens per allowed text chunk (HunyuanVideoPipeline keeps 256).
TOKENS_PER_CHUNK = 256
TOKENIZER_FOLDERS = ("llama_tokenizer", "tokenizer")
_PREFIXES = ("model.", "language_model.model.", "model.language_model.", "")
_MARK = "layers.0.self_attn.q_proj.weight"


def llama_prefix(shapes: Any) -> str | None:
    """The prefix of a Llama language model's tensors (``model.``, …), or None when they are not Llama's."""
    for prefix in _PREFIXES:
        if prefix + _MARK in shapes and prefix + "norm.weight" in shapes \
                and prefix + "layers.0.self_attn.q_proj.bias" not in shapes:
            return prefix
    return None


def llama_config(shapes: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``LlamaConfig`` values for a Llama file: llava-llama-3-8b's shipped config with the file's sizes."""
    vocab, hidden = shapes[prefix + "embed_tokens.weight"]
    layers = {int(k[len(prefix + "layers."):].split(".")[0]) for k in shapes if k.startswith(prefix + "layers.")}
    kv = shapes[prefix + "layers.0.self_attn.k_proj.weight"][0]
    return dict(shipped_config("text_encoder_llama"), vocab_size=int(vocab), hidden_size=int(hidden),
                intermediate_size=int(shapes[prefix + "layers.0.mlp.gate_proj.weight"][0]),
                num_hidden_layers=len(layers), num_attention_heads=max(1, int(hidden) // HEAD_DIM),
                num_key_value_heads=max(1, int(kv) // HEAD_DIM), head_dim=HEAD_DIM)


def llama_from_state(state: dict[str, Any], header: Header, name: str, dtype: Any = None) -> Any:
    """``LlamaModel`` from a Llama file's tensors (``state`` is emptied; fp8_scaled weights are unscaled)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries
    from ..fp8 import unscale_fp8

    prefix = llama_prefix(header.shapes)
    if prefix is None:
        raise UnknownModelError(f"{name} is not a Llama text encoder (no model.layers.*.self_attn.q_proj); "
                                "DualCLIPLoader type hunyuan_video takes clip_l and llava_llama3_fp16/fp8_scaled")
    compute = dtype or torch.float32
    state = unscale_fp8(state, compute)
    state = strip_prefix(state, prefix)
    with quiet_libraries(), init_empty_weights():
        model = LlamaModel(LlamaConfig(**llama_config(header.shapes, prefix)))
    return fill(model, state, compute, name)


def llama_tokenizer(encoder_path: Path) -> Any:
    """Llama 3's tokenizer from a ``llama_tokenizer``/``tokenizer`` folder beside the Llama file (not shipped)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(encoder_path).parent
    for cand in (folder / n for n in TOKENIZER_FOLDERS):
        if (cand / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(cand), local_files_only=True)
        if (cand / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(cand / "tokenizer.json"), bos_token="<|begin_of_text|>",
                                           eos_token="<|end_of_text|>")
    raise FileNotFoundError(f"no Llama 3 tokenizer beside {Path(encoder_path).name}: Meta's licence keeps it out of "
                            f"nodegraph, so put the tokenizer/ folder of the HunyuanVideo release "
                            f"(hunyuanvideo-community/HunyuanVideo: tokenizer.json, tokenizer_config.json) in {folder} "
                            f"as {TOKENIZER_FOLDERS[0]}/")


def load_hunyuan_clip(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """CLIP for DualCLIPLoader type hunyuan_video (``families.CLIP_LOADERS`` entry): CLIP-L + the Llama file."""
    from safetensors.torch import load_file

    from ..flow.loading import load_text_encoder, require_safetensors
    from ..loading import clip_tokenizer

    if len(paths) != 2:
        raise ValueError("type hunyuan_video takes two files: clip_l.safetensors and llava_llama3_fp16 (or "
                         "fp8_scaled); load them with DualCLIPLoader")
    for path, name in zip(paths, names):
        require_safetensors(path, name)
    headers = [read_header(Path(p)) for p in paths]
    is_llama = [llama_prefix(h.shapes) is not None for h in headers]
    if sum(is_llama) != 1:
        raise ValueError(f"type hunyuan_video takes one CLIP-L and one Llama (llava_llama3) file; "
                         f"{' and '.join(names)} hold {sum(is_llama)} Llama encoders")
    li = is_llama.index(True)
    ci = 1 - li
    tokenizer = llama_tokenizer(Path(paths[li]))
    kind, clip_model = load_text_encoder(Path(paths[ci]), names[ci], dtype, "clip_l")
    if kind != "clip_l":
        raise ValueError(f"{names[ci]} is a {kind} encoder; type hunyuan_video takes CLIP-L (clip_l.safetensors)")
    llama = llama_from_state(load_file(str(paths[li])), headers[li], names[li], dtype)
    return TextEncoder(tokenizers=(clip_tokenizer(), tokenizer), encoders=(clip_model, llama), arch="hunyuan_video")


def user_tokens(tokenizer: Any, text: str, template: str = TEMPLATE) -> tuple[list[int], int]:
    """(token ids of ``text`` in ``template``, index of the first token of the user's text): the tokens after the
    template's leading part (the 95 tokens ComfyUI and HunyuanVideoPipeline crop, for Llama 3's vocabulary)."""
    head = len(template.split("{}")[0])
    enc = tokenizer(template.format(text), return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    start = next((i for i, (a, b) in enumerate(offsets) if a >= head and b > a), len(ids) - 1)
    return ids, start


def llama_states(tokenizer: Any, encoder: Any, text: str, device: Any, max_chunks: int = 8,
                 template: str = TEMPLATE) -> Any:
    """Llama's ``hidden_states[-3]`` [1, T, D] (float32, CPU) of the user's tokens of ``text`` in ``template``."""
    import torch

    ids, start = user_tokens(tokenizer, text, template)
    limit = max(1, int(max_chunks)) * TOKENS_PER_CHUNK
    if len(ids) - start > limit:
        raise ValueError(f"the prompt is {len(ids) - start:,} Llama tokens long, more than {limit:,}; shorten it, "
                         "or raise EngineConfig.limits.max_text_chunks")
    ids_t = torch.tensor([ids], dtype=torch.long, device=device)
    out = encoder(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), output_hidden_states=True)
    return out.hidden_states[LAYER][:, start:].float().cpu()


def encode_hunyuan_video(clip: Any, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """CLIPTextEncode on a HunyuanVideo CLIP (``families.TEXT_ENCODERS`` entry): a one-entry CONDITIONING."""
    import torch

    from ..flow.text import _clip_pooled

    if clip.arch != "hunyuan_video" or len(clip.encoders) != 2:
        raise ValueError(f"this CLIP is {clip.arch}, not HunyuanVideo's pair; load clip_l and llava_llama3 with "
                         "DualCLIPLoader type hunyuan_video")
    (clip_tok, llama_tok), (clip_enc, llama_enc) = clip.tokenizers, clip.encoders
    with torch.no_grad():
        pooled = _clip_pooled(clip_tok, clip_enc, text, device)
        states = llama_states(llama_tok, llama_enc, text, device, max_chunks)
    return [(states, {"pooled_output": pooled})]


__all__ = ["LAYER", "TEMPLATE", "encode_hunyuan_video", "llama_config", "llama_from_state", "llama_prefix",
           "llama_states", "llama_tokenizer", "load_hunyuan_clip", "user_tokens"]
