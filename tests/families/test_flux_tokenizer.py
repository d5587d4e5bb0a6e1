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


def test_t5_prompt_weights_as_comfyui():
    """``(word:w)`` on T5 (Flux, SD3, Chroma): the weighted token's state is (z - z_empty)·w + z_empty, the others
    are the plain encoding of the same ids; a prompt without weights is tokenized whole."""
    import torch
    from transformers import T5Config, T5EncoderModel

    from flux_tiny import T5
    from nodegraph.diffusion.flow.text import t5_states

    tok = t5_tokenizer()
    torch.manual_seed(0)
    enc = T5EncoderModel(T5Config(**dict(T5, vocab_size=len(tok)))).eval()
    with torch.no_grad():
        plain = t5_states(tok, enc, "a red circle", "cpu", 8, min_length=8)
        weighted = t5_states(tok, enc, "a (red:1.5) circle", "cpu", 8, min_length=8)
        ids = tok("a red circle").input_ids  # [▁, a, red, circle, </s>]: the pieces tokenize the same
        assert ids == [3, 9, 1131, 8196, 1] and plain.shape == weighted.shape == (1, 8, T5["d_model"])
        full = torch.tensor([ids + [0] * 3])
        z = enc(full).last_hidden_state
        z_empty = enc(torch.tensor([[1] + [0] * 7])).last_hidden_state
    torch.testing.assert_close(plain, z)
    expected = z.clone()
    expected[0, 2] = (z[0, 2] - z_empty[0, 2]) * 1.5 + z_empty[0, 2]  # "red" only
    torch.testing.assert_close(weighted, expected)
    assert float((weighted - plain).abs().max()) > 1e-3
