"""Textual-inversion embeddings (``embedding:name``) in A1111, diffusers and SDXL layouts, checked against ComfyUI's
way of computing them: the vectors appended to the token table and given new ids."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from graphs import make_engine, run, txt2img
from safetensors.torch import save_file

from nodegraph._tiny import make_tokenizer
from nodegraph.diffusion.embeddings import Embeddings
from nodegraph.diffusion.text import encode_text, tokenize
from nodegraph.diffusion.types import TextEncoder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = make_tokenizer(tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return TextEncoder(tokenizers=(tok,), encoders=(CLIPTextModel(cfg).eval(),), arch="sd1")


def _with_vectors(encoder, tok, words_before, vectors, words_after, layer=None):
    """ComfyUI's method: a copy of the encoder whose token table has the vectors appended as new ids."""
    enc = copy.deepcopy(encoder)
    table = enc.get_input_embeddings().weight.data
    n = table.shape[0]
    new = torch.nn.Embedding(n + len(vectors), table.shape[1])
    new.weight.data[:n] = table
    for i, v in enumerate(vectors):
        new.weight.data[n + i] = v
    enc.set_input_embeddings(new)
    ids = [tok.bos_token_id]
    for w in words_before:
        ids += tok(w, add_special_tokens=False).input_ids
    ids += list(range(n, n + len(vectors)))
    for w in words_after:
        ids += tok(w, add_special_tokens=False).input_ids
    ids += [tok.eos_token_id]
    ids += [tok.pad_token_id] * (77 - len(ids))
    with torch.no_grad():
        out = enc(torch.tensor([ids]), output_hidden_states=True)
    return out


def test_a1111_layout_vectors_take_the_place_of_tokens(clip, tmp_path):
    torch.manual_seed(5)
    vecs = torch.randn(2, 32)
    save_file({"emb_params": vecs}, str(tmp_path / "style.safetensors"))
    tok, enc = clip.tokenizers[0], clip.encoders[0]
    (got, _), = encode_text(clip, "a embedding:style circle", "cpu", embeddings=Embeddings([tmp_path]))
    ref = _with_vectors(enc, tok, ["a"], list(vecs), ["circle"]).last_hidden_state
    assert torch.allclose(got, ref, atol=1e-5)
    (plain, _), = encode_text(clip, "a circle", "cpu", embeddings=Embeddings([tmp_path]))
    assert not torch.allclose(got, plain, atol=1e-3)


def test_diffusers_layout_in_a_subfolder_weighted_and_with_a_trailing_comma(clip, tmp_path):
    torch.manual_seed(6)
    vec = torch.randn(32)
    (tmp_path / "sub").mkdir()
    save_file({"<cat-toy>": vec}, str(tmp_path / "sub" / "toy.safetensors"))
    tok = clip.tokenizers[0]
    emb = Embeddings([tmp_path])
    (window,) = tokenize(tok, "(embedding:toy.safetensors:1.5) red", embeddings=emb, key="clip_l")
    assert torch.equal(window[1][0], vec) and window[1][1] == 1.5
    assert window[2] == (tok("red", add_special_tokens=False).input_ids[0], 1.0)
    (window,) = tokenize(tok, "embedding:toy, red", embeddings=emb, key="clip_l")
    comma = tok(",", add_special_tokens=False).input_ids
    assert torch.equal(window[1][0], vec) and [t for t, _ in window[2:2 + len(comma)]] == comma
    (got, _), = encode_text(clip, "embedding:toy red", "cpu", embeddings=emb)
    ref = _with_vectors(clip.encoders[0], tok, [], [vec], ["red"]).last_hidden_state
    assert torch.allclose(got, ref, atol=1e-5)


def test_unknown_pickled_escaping_or_misfit_embeddings_are_ignored_with_a_warning(clip, tmp_path, caplog):
    (tmp_path / "old.pt").write_bytes(b"not unpickled")
    save_file({"emb_params": torch.ones(1, 16)}, str(tmp_path / "narrow.safetensors"))
    outside = tmp_path.parent / "outside.safetensors"
    save_file({"emb_params": torch.ones(1, 32)}, str(outside))
    emb = Embeddings([tmp_path])
    (plain, _), = encode_text(clip, "a red circle", "cpu")
    with caplog.at_level(logging.WARNING):
        for text in ("a embedding:missing red circle", "a embedding:old red circle",
                     "a embedding:../outside red circle"):
            (got, _), = encode_text(clip, text, "cpu", embeddings=emb)
            assert torch.equal(got, plain), text
        (narrow, _), = encode_text(clip, "a embedding:narrow red circle", "cpu", embeddings=emb)
    messages = caplog.text
    assert "embedding:missing does not exist in " + str(tmp_path) in messages
    assert "old.pt" in messages and "never loaded" in messages
    assert "width 16 does not fit" in messages
    # ComfyUI drops a misfit vector, closes the row up and pads it at the end: the same tokens as without it
    assert torch.equal(narrow, plain)


def test_sdxl_file_gives_each_encoder_its_own_vectors(tiny_sdxl, tmp_path):
    parts = tiny_sdxl.components
    clip = TextEncoder(tokenizers=(parts["tokenizer"], parts["tokenizer_2"]),
                       encoders=(parts["text_encoder"], parts["text_encoder_2"]), arch="sdxl")
    torch.manual_seed(7)
    l_vec, g_vec = torch.randn(1, 32), torch.randn(1, 48)
    save_file({"clip_g": g_vec, "clip_l": l_vec}, str(tmp_path / "xl.safetensors"))
    (got, extras), = encode_text(clip, "embedding:xl circle", "cpu", embeddings=Embeddings([tmp_path]))
    ref_l = _with_vectors(parts["text_encoder"], parts["tokenizer"], [], list(l_vec), ["circle"])
    ref_g = _with_vectors(parts["text_encoder_2"], parts["tokenizer_2"], [], list(g_vec), ["circle"])
    expected = torch.cat([ref_l.hidden_states[-2], ref_g.hidden_states[-2]], dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(extras["pooled_output"], ref_g.text_embeds, atol=1e-5)


def test_clip_text_encode_reads_the_embeddings_folder(tiny_sd):
    folder = tiny_sd.config.model_dir("embeddings")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(8)
    save_file({"emb_params": torch.randn(3, 32)}, str(folder / "node-test.safetensors"))
    try:
        engine = make_engine(tiny_sd.config)
        wf = txt2img(positive="a embedding:node-test circle", negative="a circle")
        wf["c_pos"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
        wf["c_neg"] = {"class_type": "Capture", "inputs": {"value": ["neg", 0]}}
        result, cap = run(engine, wf)
        result.raise_for_status()
        (pos, _), = cap["c_pos"]
        (neg, _), = cap["c_neg"]
        assert pos.shape == neg.shape == (1, 77, 32)
        assert not torch.allclose(pos, neg, atol=1e-3)
    finally:
        (folder / "node-test.safetensors").unlink()
