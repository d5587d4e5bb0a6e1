"""Prompt emphasis as ComfyUI parses and applies it: the parser on hand-worked cases, the windows of tokens and
weights, and the encoder output against a hand computation of (z - z_empty) · w + z_empty on the tiny CLIP."""

from __future__ import annotations

import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph._tiny import make_tokenizer
from nodegraph.diffusion.prompt_syntax import MAX_DEPTH, parse
from nodegraph.diffusion.text import encode_text, tokenize
from nodegraph.diffusion.types import TextEncoder

W11 = 1.1
W121 = 1.1 * 1.1


@pytest.mark.parametrize("text, expected", [
    ("a red circle", [("a red circle", 1.0)]),
    ("a (red:1.2) cat", [("a ", 1.0), ("red", 1.2), (" cat", 1.0)]),
    ("(red)", [("red", W11)]),
    ("((red))", [("red", W121)]),
    ("(((red)) blue)", [("red", W11 * W11 * W11), (" blue", W11)]),
    ("((red:1.5) blue)", [("red", 1.5), (" blue", W11)]),  # an explicit weight replaces, it does not multiply
    ("(red:0.5:2)", [("red:0.5", 2.0)]),  # the last colon holds the number
    ("(red:abc)", [("red:abc", W11)]),  # not a number: the colon is text
    ("(:1.5)", [(":1.5", W11)]),  # a colon first is text
    ("( red : 1.5 )", [(" red ", 1.5)]),
    ("[red]", [("[red]", 1.0)]),  # brackets mean nothing
    ("\\(red\\)", [("(red)", 1.0)]),
    ("(a \\) b)", [("a ) b", W11)]),
    ("\\\\(red)", [("\\(red)", 1.0)]),  # the second backslash escapes the paren; the first stays
    ("(red", [("(red", 1.0)]),
    ("red)", [("red)", 1.0)]),
    ("((red)", [("(red", W11)]),
    ("(red))(blue)", [("red", W11), (")(blue)", 1.0)]),
    ("()", []),
    ("a (b) c (d:0.5)", [("a ", 1.0), ("b", W11), (" c ", 1.0), ("d", 0.5)]),
])
def test_parser_hand_worked(text, expected):
    got = parse(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_parser_refuses_absurd_nesting_and_non_finite_weights():
    with pytest.raises(ValueError, match="nests parentheses"):
        parse("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1))
    assert parse("(" * 10 + "a" + ")" * 10) == [("a", pytest.approx(1.1 ** 10))]
    with pytest.raises(ValueError, match="not a finite number"):
        parse("(a:nan)")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = make_tokenizer(tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return TextEncoder(tokenizers=(tok,), encoders=(CLIPTextModel(cfg).eval(),), arch="sd1")


def _ids(tok, word):
    return tok(word, add_special_tokens=False).input_ids


def test_windows_carry_each_token_weight(clip):
    tok = clip.tokenizers[0]
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    (window,) = tokenize(tok, "a (red:1.5) ((circle))")
    a, red, circle = _ids(tok, "a"), _ids(tok, "red"), _ids(tok, "circle")
    assert [t for t, _ in window] == [bos, *a, *red, *circle, eos] + [pad] * (77 - 2 - len(a + red + circle))
    weights = [w for _, w in window]
    assert weights[:1 + len(a)] == [1.0] * (1 + len(a))
    assert weights[1 + len(a):1 + len(a + red)] == [1.5] * len(red)
    assert weights[1 + len(a + red):1 + len(a + red + circle)] == pytest.approx([W121] * len(circle))
    assert set(weights[1 + len(a + red + circle):]) == {1.0}


def test_words_move_whole_to_the_next_window_unless_long(clip):
    tok = clip.tokenizers[0]
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    one = _ids(tok, "a")
    assert len(one) == 1
    short = "xqz"  # three single-byte tokens in the tiny vocabulary
    assert len(_ids(tok, short)) == 3
    first, second = tokenize(tok, " ".join(["a"] * 74 + [short]))
    # 74 tokens fit; a 3-token word does not (74 + 3 > 75): the window closes with end + padding
    assert [t for t, _ in first] == [bos] + one * 74 + [eos, pad]
    assert [t for t, _ in second][:5] == [bos, *_ids(tok, short), eos]
    long = "xqzxqzxqzx"  # ten tokens: a long word is split at the window's end
    ids = _ids(tok, long)
    assert len(ids) == 10
    first, second = tokenize(tok, " ".join(["a"] * 70 + [long]))
    assert [t for t, _ in first] == [bos] + one * 70 + ids[:5] + [eos]
    assert [t for t, _ in second][:7] == [bos, *ids[5:], eos]
    with pytest.raises(ValueError, match="longer than 150 tokens.*max_text_chunks"):
        tokenize(tok, " ".join(["a"] * 151), max_chunks=2)


def _hidden(encoder, ids):
    with torch.no_grad():
        return encoder(torch.tensor([ids])).last_hidden_state[0]


def test_weights_move_tokens_away_from_the_empty_prompt(clip):
    tok, encoder = clip.tokenizers[0], clip.encoders[0]
    plain = tok("a red circle", padding="max_length", max_length=77).input_ids
    z = _hidden(encoder, plain)
    empty = _hidden(encoder, [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * 75)
    (got, extras), = encode_text(clip, "a (red:1.5) (circle:0.25)", "cpu")
    expected = z.clone()
    n_a, n_red = len(_ids(tok, "a")), len(_ids(tok, "red"))
    red = slice(1 + n_a, 1 + n_a + n_red)
    circle = slice(red.stop, red.stop + len(_ids(tok, "circle")))
    expected[red] = (z[red] - empty[red]) * 1.5 + empty[red]
    expected[circle] = (z[circle] - empty[circle]) * 0.25 + empty[circle]
    assert got.shape == (1, 77, 32) and extras == {}
    assert torch.allclose(got[0], expected, atol=1e-6)
    assert not torch.allclose(got[0], z, atol=1e-3)
    # no weights: exactly the tokens and output of a plain (diffusers-style) encoding
    (unweighted, _), = encode_text(clip, "a red circle", "cpu")
    assert torch.equal(unweighted[0], z)
    (same, _), = encode_text(clip, "a (red:1.0) circle", "cpu")
    assert torch.equal(same[0], z)


def test_sdxl_weights_each_encoder_and_keeps_the_first_window_pooled(tiny_sdxl):
    parts = tiny_sdxl.components
    clip = TextEncoder(tokenizers=(parts["tokenizer"], parts["tokenizer_2"]),
                       encoders=(parts["text_encoder"], parts["text_encoder_2"]), arch="sdxl")
    (plain, px), = encode_text(clip, "a red circle", "cpu")
    (weighted, wx), = encode_text(clip, "a (red:2) circle", "cpu")
    assert plain.shape == weighted.shape == (1, 77, 32 + 48)
    assert torch.equal(px["pooled_output"], wx["pooled_output"])  # the pooled output is never weighted
    tok, tok2 = parts["tokenizer"], parts["tokenizer_2"]
    pos = 1 + len(_ids(tok, "a"))
    with torch.no_grad():
        e1 = parts["text_encoder"](torch.tensor([[tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * 75]),
                                   output_hidden_states=True).hidden_states[-2][0]
        e2 = parts["text_encoder_2"](torch.tensor([[tok2.bos_token_id, tok2.eos_token_id]
                                                   + [tok2.pad_token_id] * 75]),
                                     output_hidden_states=True).hidden_states[-2][0]
    empty = torch.cat([e1, e2], dim=-1)
    expected = (plain[0, pos] - empty[pos]) * 2 + empty[pos]
    assert torch.allclose(weighted[0, pos], expected, atol=1e-5)
    others = [i for i in range(77) if i != pos]
    assert torch.equal(weighted[0, others], plain[0, others])


def test_clip_text_encode_node_applies_weights(tiny_sd):
    engine = make_engine(tiny_sd.config)
    wf = txt2img(positive="a (red:1.3) circle", negative="a red circle")
    wf["c_pos"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
    wf["c_neg"] = {"class_type": "Capture", "inputs": {"value": ["neg", 0]}}
    result, cap = run(engine, wf)
    result.raise_for_status()
    (pos, _), = cap["c_pos"]
    (neg, _), = cap["c_neg"]
    diff = (pos - neg).abs().amax(dim=-1)[0]
    assert diff[2] > 1e-3 and float(diff[torch.arange(77) != 2].max()) == 0.0
