"""LTX-2's text encoder (LTXAVTextEncoderLoader): Gemma-3 12B, its tokenizer, and the checkpoint's text connectors.

The prompt (stripped, with Gemma's BOS) is read by Gemma-3; every hidden state (embeddings + 48 layers) is stacked,
normalised over the prompt's tokens, projected and run through the video and audio connectors of the LTX-2
checkpoint (``LTX2TextConnectors``), which fill the sequence up to 1024 tokens (or the next multiple of their 128
registers) with learned registers, as ``LTX2Pipeline`` and ComfyUI do. A CONDITIONING entry holds the video and the
audio connector states side by side [1, T, 2 · 3840] with their ``attention_mask``.

Gemma's tokenizer is under Gemma's terms of use, so it is not shipped: it is read from the ``spiece_model`` tensor
that ComfyUI's ``gemma_3_12B_it.safetensors`` carries, else from the ``tokenizer/`` folder of the Gemma-3 release
(``tokenizer.json`` or ``tokenizer.model``) put beside the text-encoder file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..detect import UnknownModelError
from ..types import TextEncoder
from .files import shipped_config

TOKENIZER_FOLDERS = ("tokenizer", "gemma_tokenizer", "gemma3_tokenizer")
SPIECE_KEY = "spiece_model"  # ComfyUI's Gemma files carry the SentencePiece model as a byte tensor
MIN_LENGTH = 1024
#: Longest prompt accepted, in tokens per allowed text chunk (``limits.max_text_chunks``).
TOKENS_PER_CHUNK = 1024
_GEMMA_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
_CONNECTOR_NAMES = (("text_embedding_projection.aggregate_embed.", "text_proj_in."),
                    ("model.diffusion_model.video_embeddings_connector.", "video_connector."),
                    ("model.diffusion_model.audio_embeddings_connector.", "audio_connector."),
                    ("connectors.", ""))


class SpieceTokenizer:
    """Gemma's SentencePiece model read as ComfyUI reads it: BOS, then the pieces (no EOS, no padding)."""

    def __init__(self, model: bytes) -> None:
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model)

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any:
        """``.input_ids`` of ``text`` (with BOS when ``add_special_tokens``)."""
        from types import SimpleNamespace

        ids = list(self.processor.encode(text))
        bos = self.processor.bos_id()
        return SimpleNamespace(input_ids=([bos] if add_special_tokens and bos >= 0 else []) + ids)


def gemma_tokenizer(encoder_path: Path, spiece: bytes | None = None) -> Any:
    """Gemma-3's tokenizer (not shipped: Gemma's terms): the ``spiece_model`` bytes ComfyUI's Gemma files carry, else
    a ``tokenizer/`` folder beside the text-encoder file."""
    from transformers import GemmaTokenizerFast

    if spiece:
        return SpieceTokenizer(spiece)
    folder = Path(encoder_path).parent
    for cand in (folder / n for n in TOKENIZER_FOLDERS):
        if (cand / "tokenizer.json").is_file():
            return GemmaTokenizerFast.from_pretrained(str(cand), local_files_only=True)
        if (cand / "tokenizer.model").is_file():
            return SpieceTokenizer((cand / "tokenizer.model").read_bytes())
    raise FileNotFoundError(f"no Gemma-3 tokenizer in or beside {Path(encoder_path).name}: Gemma's tokenizer is under "
                            "Gemma's terms of use and is not shipped; use ComfyUI's gemma_3_12B_it.safetensors (it "
                            "carries the tokenizer) or put the tokenizer/ folder of the Gemma-3 12B release "
                            f"(tokenizer.json or tokenizer.model) in {folder} as {TOKENIZER_FOLDERS[0]}/")


def gemma_state(state: dict[str, Any], name: str = "this file") -> dict[str, Any]:
    """``Gemma3TextModel`` names for a Gemma-3 file's text tensors (ComfyUI's, transformers' names; vision dropped)."""
    if any(k.endswith(("scale_weight", "weight_scale", "scale_input")) for k in state):
        raise UnknownModelError(f"{name} is an fp8-scaled Gemma-3 file, which this version does not read; use the "
                                "bf16 gemma_3_12B_it.safetensors")
    out = {}
    for key in list(state):
        for prefix in _GEMMA_PREFIXES:
            if key.startswith(prefix):
                out[key[len(prefix):]] = state.pop(key)
                break
    state.clear()
    return out


def gemma_config(state: dict[str, Any], name: str) -> dict[str, Any]:
    """Gemma-3 text config from the tensors' shapes over the shipped 12B config (layer pattern, RoPE, window)."""
    try:
        vocab, hidden = (int(s) for s in state["embed_tokens.weight"].shape)
        head = int(state["layers.0.self_attn.q_norm.weight"].shape[0])
        heads = int(state["layers.0.self_attn.q_proj.weight"].shape[0]) // head
        kv = int(state["layers.0.self_attn.k_proj.weight"].shape[0]) // head
        inter = int(state["layers.0.mlp.gate_proj.weight"].shape[0])
    except KeyError as exc:
        raise UnknownModelError(f"{name} is not a Gemma-3 text encoder (no {exc}); LTX-2 reads "
                                "gemma_3_12B_it.safetensors") from None
    layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    return dict(shipped_config("gemma3_12b_text"), vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, head_dim=head,
                query_pre_attn_scalar=head)


def connector_state(state: dict[str, Any]) -> dict[str, Any]:
    """``LTX2TextConnectors`` names for a checkpoint's text projection and connectors (ComfyUI's or diffusers')."""
    out = {}
    for key in list(state):
        for old, new in _CONNECTOR_NAMES:
            if key.startswith(old):
                rest = key[len(old):].replace("transformer_1d_blocks.", "transformer_blocks.")
                rest = rest.replace(".q_norm.", ".norm_q.").replace(".k_norm.", ".norm_k.")
                out[new + rest] = state.pop(key)
                break
        else:
            if key.startswith(("text_proj_in.", "video_connector.", "audio_connector.")):
                out[key] = state.pop(key)
    return out


def connector_config(state: dict[str, Any], name: str) -> dict[str, Any]:
    """``LTX2TextConnectors`` config from the shapes over the shipped one."""
    if "text_proj_in.weight" not in state or "video_connector.learnable_registers" not in state:
        raise UnknownModelError(f"{name} holds no LTX-2 text connectors (text_embedding_projection, "
                                "video_embeddings_connector); choose the LTX-2 checkpoint as ckpt_name")
    caption, packed = (int(s) for s in state["text_proj_in.weight"].shape)
    base = shipped_config("connectors")
    head = int(base["video_connector_attention_head_dim"])

    def blocks(prefix: str) -> int:
        return len({k.split(".")[2] for k in state if k.startswith(prefix + ".transformer_blocks.")})

    out = dict(base, caption_channels=caption, text_proj_in_factor=packed // caption)
    for side in ("video", "audio"):
        out.update({f"{side}_connector_num_attention_heads": caption // head,
                    f"{side}_connector_num_layers": blocks(f"{side}_connector"),
                    f"{side}_connector_num_learnable_registers":
                        int(state[f"{side}_connector.learnable_registers"].shape[0])})
    return out


def load_ltxav_clip(encoder_path: Path, checkpoint_path: Path, names: tuple[str, str],
                    dtype: Any = None) -> TextEncoder:
    """CLIP of LTXAVTextEncoderLoader: Gemma-3 (``encoder_path``), its tokenizer, the checkpoint's connectors."""
    import torch
    from accelerate import init_empty_weights
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from ..flow.loading import fill
    from ..loading import quiet_libraries
    from .files import read_tensors

    state = read_tensors(Path(encoder_path), _GEMMA_PREFIXES + (SPIECE_KEY,))
    spiece = state.pop(SPIECE_KEY, None)
    tokenizer = gemma_tokenizer(encoder_path, None if spiece is None else spiece.numpy().tobytes())
    state = gemma_state(state, names[0])
    config = Gemma3TextConfig(**gemma_config(state, names[0]))
    compute = dtype or torch.float32
    with quiet_libraries(), init_empty_weights():
        gemma = Gemma3TextModel(config)
    fill(gemma, state, compute, names[0])
    conn_state = connector_state(read_tensors(Path(checkpoint_path), tuple(old for old, _ in _CONNECTOR_NAMES)
                                              + ("text_proj_in.", "video_connector.", "audio_connector.")))
    with quiet_libraries(), init_empty_weights():
        connectors = LTX2TextConnectors.from_config(connector_config(conn_state, names[1]))
    fill(connectors, conn_state, compute, names[1])
    return TextEncoder(tokenizers=(tokenizer,), encoders=(gemma.eval(), connectors.eval()), arch="ltx2")


def load_ltxav_pair(paths: list[Path], names: list[str], dtype: Any = None) -> TextEncoder:
    """DualCLIPLoader type ltxv with LTX-2's pair: the Gemma-3 file and the LTX-2 checkpoint, in either order."""
    from ..detect import read_header

    gemma = [i for i, p in enumerate(paths) if any(k.endswith("layers.0.self_attn.q_norm.weight")
                                                   for k in read_header(Path(p)).shapes)]
    if len(gemma) != 1:
        raise UnknownModelError(f"DualCLIPLoader type ltxv takes LTX-2's Gemma-3 file and the LTX-2 checkpoint; "
                                f"{' and '.join(names)} are not that pair (or use CLIPLoader type ltxv with T5-XXL "
                                "for LTX-Video)")
    g = gemma[0]
    return load_ltxav_clip(Path(paths[g]), Path(paths[1 - g]), (names[g], names[1 - g]), dtype)


def encode_ltx2(clip: TextEncoder, text: str, device: Any, max_chunks: int = 8) -> list[tuple[Any, dict]]:
    """A one-entry CONDITIONING for an LTX-2 CLIP: video ‖ audio connector states [1, T, 2·C] and their mask."""
    import torch

    if len(clip.encoders) != 2:
        raise ValueError("this CLIP holds no LTX-2 text encoder (LTX-2 checkpoints ship without Gemma-3); load "
                         "gemma_3_12B_it.safetensors and the checkpoint with LTXAVTextEncoderLoader and connect its "
                         "CLIP instead")
    tokenizer, (gemma, connectors) = clip.tokenizers[0], clip.encoders
    ids = tokenizer(text.strip(), add_special_tokens=True).input_ids
    limit = max(1, int(max_chunks)) * TOKENS_PER_CHUNK
    if len(ids) > limit:
        raise ValueError(f"the prompt is {len(ids):,} Gemma tokens long, more than {limit:,}; shorten it, or raise "
                         "EngineConfig.limits.max_text_chunks")
    registers = int(connectors.config.video_connector_num_learnable_registers or 1)
    length = max(MIN_LENGTH, math.ceil(len(ids) / registers) * registers)
    param = next(gemma.parameters())
    with torch.no_grad():
        tokens = torch.tensor([ids], dtype=torch.long, device=device)
        states = gemma(input_ids=tokens, attention_mask=torch.ones_like(tokens),
                       output_hidden_states=True).hidden_states
        stacked = torch.stack(states, dim=-1)  # [1, n, hidden, layers + 1]
        padded = stacked.new_zeros((1, length) + tuple(stacked.shape[2:]))
        padded[:, length - len(ids):] = stacked  # left padding, as Gemma's tokenizer pads for LTX2Pipeline
        mask = torch.zeros(1, length, dtype=torch.long, device=device)
        mask[:, length - len(ids):] = 1
        video, audio, out_mask = connectors(padded.flatten(2, 3).to(param.dtype), mask, padding_side="left")
    emb = torch.cat([video, audio], dim=-1).float().cpu()
    return [(emb, {"attention_mask": out_mask.long().cpu()})]


__all__ = ["MIN_LENGTH", "SPIECE_KEY", "TOKENIZER_FOLDERS", "SpieceTokenizer", "connector_config", "connector_state",
           "encode_ltx2", "gemma_config", "gemma_state", "gemma_tokenizer", "load_ltxav_clip", "load_ltxav_pair"]
