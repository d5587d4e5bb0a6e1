"""The shipped T5 vocabulary tokenizes as T5 v1.1 (known ids), and a tokenizer folder beside the file wins."""

from __future__ import annotations

from nodegraph.diffusion.flow.loading import t5_tokenizer


def test_shipped_t5_tokenizer_known_ids():
    tok = t5_tokenizer()
    assert tok("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    assert (len(tok), tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (32100, 0, 1, 2)
    assert tok("<extra_id_3>").input_ids == [32096, 1]


def test_folder_beside_the_encoder_wins(tiny_flux):
    path = tiny_flux.home / "models" / "text_encoders" / "t5xxl_fp16.safetensors"
    assert len(t5_tokenizer(path)) < 100  # the tiny test vocabulary, not the shipped one
