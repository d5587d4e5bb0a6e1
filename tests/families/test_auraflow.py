"""AuraFlow through our nodes equals diffusers: the all-in-one checkpoint and the split files load with the diffusers
modules' weights, and the graph CheckpointLoaderSimple + CLIPTextEncode + ModelSamplingAuraFlow + EmptyLatentImage +
KSampler (euler/simple) + VAEDecode gives AuraFlowPipeline's image with the same noise and sigmas, ≤ 1/255.
ComfyUI_examples' aura_flow graphs validate with only the model files missing, and run on the tiny checkpoint saved
under their file name."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from auraflow_tiny import CHECKPOINT, LAYOUTS, TEXT_ENCODER, TinyAura, build

PROMPT = "a photo of the red cat on the sky"
NEGATIVE = "the green tree"
SEED, STEPS, SIZE, SHIFT = 7, 3, 64, 1.73
EXAMPLES = sorted((Path(__file__).parent / "auraflow_examples").glob("*.json"))
FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "vae_name"}

tiny_aura = kit.tiny_fixture(build, "tiny-aura-home")
engine = kit.engine_fixture("tiny_aura")


def graph(cfg: float = 1.0, shift: float = SHIFT) -> dict:
    """ComfyUI's aura_flow example graph (with ModelSamplingAuraFlow), image captured as "img"."""
    return {
        "ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "pos": kit.encode(PROMPT, "ckpt", 1),
        "neg": kit.encode(NEGATIVE, "ckpt", 1),
        "aura": kit.node("ModelSamplingAuraFlow", model=["ckpt", 0], shift=shift),
        "empty": kit.empty_latent("EmptyLatentImage", SIZE),
        "ks": kit.ksampler("aura", SEED, STEPS, cfg),
        "dec": kit.decode(vae=["ckpt", 2]),
        "img": kit.capture("dec"),
    }


def _reference(tiny: TinyAura, cfg: float) -> torch.Tensor:
    """AuraFlowPipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = kit.seeded_noise((1, 4, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        out = tiny.pipeline()(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=None,
                              sigmas=kit.simple_sigmas(STEPS, SHIFT), guidance_scale=cfg, latents=noise,
                              output_type="pt").images
    return kit.channels_last(out)


def test_checkpoint_and_split_files_load_the_diffusers_weights(engine, tiny_aura):
    wf = {"ckpt": graph()["ckpt"],
          "u1": kit.unet_loader(LAYOUTS["original"]),
          "u2": kit.unet_loader(LAYOUTS["diffusers"]),
          "clip": kit.node("CLIPLoader", clip_name=TEXT_ENCODER, type="cosmos", device="default"),
          "sd": kit.node("CLIPLoader", clip_name=TEXT_ENCODER, type="stable_diffusion", device="default")}  # by content
    cap = kit.run(engine, kit.add_captures(wf, m=["ckpt", 0], c=["ckpt", 1], v=["ckpt", 2], m1="u1", m2="u2", c2="clip",
                                   c3="sd"))
    model = kit.unwrap(cap["m"])
    assert model.family == "auraflow" and model.flow.kind == "discrete" and model.flow.shift == 1.73
    pairs = [(kit.unwrap(cap[k]).unet, tiny_aura.transformer) for k in ("m", "m1", "m2")]
    pairs += [(kit.unwrap(cap[k]).encoders[0], tiny_aura.text_encoder) for k in ("c", "c2", "c3")]
    pairs.append((kit.unwrap(cap["v"]).vae, tiny_aura.vae))
    for ours, ref in pairs:
        kit.assert_same_weights(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_graph_image_equals_auraflow_pipeline(engine, tiny_aura, cfg):
    kit.assert_parity(kit.run(engine, graph(cfg))["img"], _reference(tiny_aura, cfg),
                  f"AuraFlow parity (cfg {cfg}) vs AuraFlowPipeline")


def test_shift_and_prompt_change_the_image(engine):
    """The parity above would not see a wrong shift or prompt encoding if they did not matter: they do."""
    base = kit.run(engine, graph())["img"]
    other = graph()
    other["pos"]["inputs"]["text"] = "blue square"
    for wf in (graph(shift=3.0), other):
        assert kit.max_diff(kit.run(engine, wf)["img"], base) > 1 / 255


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tmp_path):
    from nodegraph.diffusion.auraflow.loading import pile_t5_tokenizer
    from nodegraph.diffusion.auraflow.sampling import AuraDenoiser

    model = kit.unwrap(kit.run(engine, {"ckpt": graph()["ckpt"], "m": kit.capture("ckpt")})["m"])
    with pytest.raises(ValueError, match="Pile-T5"):  # e.g. a CLIP-L conditioning
        AuraDenoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(FileNotFoundError, match="pile_t5_tokenizer"):
        pile_t5_tokenizer(tmp_path / CHECKPOINT)


def test_examples_validate_but_for_missing_files(tmp_path):
    kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path)


@pytest.mark.slow
def test_example_runs_on_the_tiny_checkpoint(tiny_aura, tmp_path):
    prompt = kit.load_example(Path(__file__).parent / "auraflow_examples" / "aura_flow_0.1_example.json")
    kit.shrink(prompt, {"EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    kit.run_example(tiny_aura.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))


def test_shipped_configs_have_the_published_sizes():
    """AuraFlow's transformer is 6.8B parameters (fal's model card), Pile-T5-XL's encoder 1.29B; full-size tensor
    names (original layout, on the meta device) are detected back to the shipped config."""
    from auraflow_tiny import to_original
    from diffusers import AuraFlowTransformer2DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from nodegraph.diffusion.auraflow.detect import (
        shipped_config,
        text_encoder_config,
        text_encoder_prefix,
        transformer_config,
        transformer_layout,
    )

    transformer = kit.on_meta(lambda: AuraFlowTransformer2DModel.from_config(shipped_config("transformer")))
    encoder = kit.on_meta(lambda: UMT5EncoderModel(UMT5Config(**shipped_config("text_encoder"))))
    counts = [kit.parameter_count(m) for m in (transformer, encoder)]
    assert counts == [6_858_605_568, 1_289_349_120]
    shapes = {"model." + k: tuple(v.shape) for k, v in to_original(transformer.state_dict()).items()}
    layout = transformer_layout(shapes)
    assert layout == ("model.", "original")
    assert transformer_config(shapes, *layout)[0] == shipped_config("transformer")
    te = {"text_encoders.pile_t5xl.transformer." + k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    prefix = text_encoder_prefix(te)
    assert prefix == "text_encoders.pile_t5xl.transformer."
    assert text_encoder_config(te, prefix) == shipped_config("text_encoder")


def test_t5_ids_have_no_start_token_and_one_end_token():
    """ComfyUI's Pile-T5 tokens: no start token, the end token last, whatever the tokenizer folder's settings."""
    from nodegraph.diffusion.auraflow.text import masked_t5_states

    seen = []

    class Tok:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 1

        def __init__(self, ids):
            self.ids = ids

        def __call__(self, text, **kwargs):
            return type("Enc", (), {"input_ids": list(self.ids)})()

    class Enc:
        def __call__(self, tokens, attention_mask):
            seen.append((tokens[0, :6].tolist(), int(attention_mask.sum())))
            return type("Out", (), {"last_hidden_state": torch.ones(1, tokens.shape[1], 4)})()

    for ids in ([1, 7, 8, 2], [7, 8, 2], [7, 8]):
        states = masked_t5_states(Tok(ids), Enc(), "x", "cpu", 8)
        assert states.shape == (1, 8, 4) and float(states[0, 3:].abs().sum()) == 0
    assert seen == [([7, 8, 2, 1, 1, 1], 3)] * 3
