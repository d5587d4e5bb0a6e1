"""T5TokenizerOptions: the CLIP carries min_padding/min_length (ComfyUI's tokenizer options) and the T5 encodings of
Flux, SD3 and Chroma pad as ComfyUI's tokenizer then does: end token, min_padding pads, then up to min_length."""

from __future__ import annotations

import pytest
import torch
from test_flux_parity import PROMPT, _run

from nodegraph.diffusion.flow.chroma import encode_chroma
from nodegraph.diffusion.flow.public import with_t5_options
from nodegraph.diffusion.flow.sd3_text import encode_sd3
from nodegraph.diffusion.flow.text import t5_padded
from nodegraph.diffusion.types import TextEncoder
from nodegraph.testing_graphs import capture_engine


@pytest.fixture(scope="module")
def engine(flux_config):
    return capture_engine(flux_config)


@pytest.fixture(scope="module")
def t5(tiny_flux):
    """(tokenizer, encoder) of the tiny Flux's T5."""
    return tiny_flux.pipeline().tokenizer_2, tiny_flux.t5.eval()


def _states(encoder, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return encoder(torch.tensor([ids])).last_hidden_state.float()


def test_padding_rules():
    """ComfyUI's order: min_padding pads after the end token, then pads up to min_length; min_length 0 is none."""
    assert t5_padded([5, 1], 0, (), 4) == [5, 1, 0, 0]
    assert t5_padded([5, 1], 0, (("t5xxl_min_length", 0),), 256) == [5, 1]
    assert t5_padded([5, 1], 0, (("t5xxl_min_padding", 3), ("t5xxl_min_length", 0)), 256) == [5, 1, 0, 0, 0]
    assert t5_padded([5, 1], 0, (("t5xxl_min_padding", 1), ("t5xxl_min_length", 6)), 256) == [5, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("min_padding, min_length", [(0, 0), (2, 0), (1, 300)])
def test_flux_t5_follows_the_options(engine, t5, min_padding, min_length):
    """DualCLIPLoader → T5TokenizerOptions → CLIPTextEncode: T5's states are the padded tokens' (256 without)."""
    tokenizer, _ = t5
    wf = {"clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                              "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
          "opts": {"class_type": "T5TokenizerOptions", "inputs": {"clip": ["clip", 0], "min_padding": min_padding,
                                                                  "min_length": min_length}},
          "enc": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["opts", 0]}},
          "plain": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
          "p": {"class_type": "Capture", "inputs": {"value": ["plain", 0]}},
          "k": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    cap = _run(engine, wf)
    encoder = cap["k"].encoders[1]  # the T5 as loaded from its file
    ids = tokenizer(PROMPT).input_ids
    want = ids + [tokenizer.pad_token_id] * min_padding
    want += [tokenizer.pad_token_id] * max(0, min_length - len(want))
    states = cap["c"][0][0]
    assert states.shape[1] == len(want)
    assert torch.allclose(states, _states(encoder, want), atol=1e-5)
    assert cap["p"][0][0].shape[1] == 256


def test_later_options_win(tiny_flux):
    """A second T5TokenizerOptions replaces the first (ComfyUI sets the same keys again)."""
    clip = TextEncoder(tokenizers=(), encoders=(), arch="flux")
    twice = with_t5_options(with_t5_options(clip, 4, 9), 1, 0)
    assert dict(twice.options)["t5xxl_min_padding"] == 1 and dict(twice.options)["t5xxl_min_length"] == 0
    assert dict(twice.options)["umt5xxl_min_padding"] == 1 and clip.options == ()


def test_sd3_and_chroma_t5_follow_the_options(t5):
    """SD3's T5 part (77 tokens by default) and Chroma's (unpadded by default) take the same options."""
    tokenizer, encoder = t5
    ids = tokenizer(PROMPT).input_ids
    pad = tokenizer.pad_token_id
    sd3 = TextEncoder(tokenizers=(None, None, tokenizer), encoders=(None, None, encoder), arch="sd3")
    with torch.no_grad():
        default = encode_sd3(sd3, "", "", PROMPT, "cpu", empty_padding="none")[0][0]
        padded = encode_sd3(with_t5_options(sd3, 3, 0), "", "", PROMPT, "cpu", empty_padding="none")[0][0]
    assert default.shape[1] == 77
    assert torch.allclose(padded, _states(encoder, ids + [pad] * 3), atol=1e-5)
    chroma = TextEncoder(tokenizers=(tokenizer,), encoders=(encoder,), arch="chroma")
    with torch.no_grad():
        plain = encode_chroma(chroma, "", "cpu")[0][0]
        three = encode_chroma(with_t5_options(chroma, 0, 3), "", "cpu")[0][0]  # ComfyUI's Chroma example
    assert plain.shape[1] == 1
    assert torch.allclose(three, _states(encoder, [tokenizer.eos_token_id, pad, pad]), atol=1e-5)
