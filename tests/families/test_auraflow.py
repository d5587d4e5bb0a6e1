"""AuraFlow through our nodes equals diffusers: the all-in-one checkpoint and the split files load with the diffusers
modules' weights, and the graph CheckpointLoaderSimple + CLIPTextEncode + ModelSamplingAuraFlow + EmptyLatentImage +
KSampler (euler/simple) + VAEDecode gives AuraFlowPipeline's image with the same noise and sigmas, ≤ 1/255.
ComfyUI_examples' aura_flow graphs validate with only the model files missing, and run on the tiny checkpoint saved
under their file name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from auraflow_tiny import CHECKPOINT, LAYOUTS, TEXT_ENCODER, TinyAura, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
NEGATIVE = "the green tree"
SEED, STEPS, SIZE, SHIFT = 7, 3, 64, 1.73
EXAMPLES = sorted((Path(__file__).parent / "auraflow_examples").glob("*.json"))
FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "vae_name"}


@pytest.fixture(scope="module")
def tiny_aura(tmp_path_factory: pytest.TempPathFactory) -> TinyAura:
    return build(tmp_path_factory.mktemp("tiny-aura-home"))


@pytest.fixture(scope="module")
def engine(tiny_aura):
    cfg = EngineConfig(home=tiny_aura.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(cfg: float = 1.0, shift: float = SHIFT) -> dict:
    """ComfyUI's aura_flow example graph (with ModelSamplingAuraFlow), image captured as "img"."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["ckpt", 1]}},
        "aura": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["ckpt", 0], "shift": shift}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["aura", 0], "seed": SEED, "steps": STEPS, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


def _reference(tiny: TinyAura, cfg: float) -> torch.Tensor:
    """AuraFlowPipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = make_noise((1, 4, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    sigmas = flow_sigmas("simple", STEPS, FlowSettings("discrete", SHIFT, 1.0))[:-1]
    with torch.no_grad():
        out = tiny.pipeline()(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=None,
                              sigmas=[float(s) for s in sigmas], guidance_scale=cfg, latents=noise,
                              output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


def test_checkpoint_and_split_files_load_the_diffusers_weights(engine, tiny_aura):
    wf = {"ckpt": graph()["ckpt"],
          "u1": {"class_type": "UNETLoader", "inputs": {"unet_name": LAYOUTS["original"], "weight_dtype": "default"}},
          "u2": {"class_type": "UNETLoader", "inputs": {"unet_name": LAYOUTS["diffusers"], "weight_dtype": "default"}},
          "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "cosmos",
                                                           "device": "default"}},
          "sd": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "stable_diffusion",
                                                         "device": "default"}}}  # by content, as ComfyUI
    for name, src in (("m", ["ckpt", 0]), ("c", ["ckpt", 1]), ("v", ["ckpt", 2]), ("m1", ["u1", 0]),
                      ("m2", ["u2", 0]), ("c2", ["clip", 0]), ("c3", ["sd", 0])):
        wf[name] = {"class_type": "Capture", "inputs": {"value": src}}
    cap = _run(engine, wf)
    model = _get(cap["m"])
    assert model.family == "auraflow" and model.flow.kind == "discrete" and model.flow.shift == 1.73
    pairs = [(_get(cap[k]).unet, tiny_aura.transformer) for k in ("m", "m1", "m2")]
    pairs += [(_get(cap[k]).encoders[0], tiny_aura.text_encoder) for k in ("c", "c2", "c3")]
    pairs.append((_get(cap["v"]).vae, tiny_aura.vae))
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_graph_image_equals_auraflow_pipeline(engine, tiny_aura, cfg):
    image = _run(engine, graph(cfg))["img"]
    reference = _reference(tiny_aura, cfg)
    assert image.shape == reference.shape
    diff = float((image - reference).abs().max())
    print(f"AuraFlow parity (cfg {cfg}): max |ours - AuraFlowPipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_shift_and_prompt_change_the_image(engine):
    """The parity above would not see a wrong shift or prompt encoding if they did not matter: they do."""
    base = _run(engine, graph())["img"]
    other = graph()
    other["pos"]["inputs"]["text"] = "blue square"
    for wf in (graph(shift=3.0), other):
        assert float((_run(engine, wf)["img"] - base).abs().max()) > 1 / 255


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tmp_path):
    from nodegraph.diffusion.auraflow.loading import pile_t5_tokenizer
    from nodegraph.diffusion.auraflow.sampling import AuraDenoiser

    model = _get(_run(engine, {"ckpt": graph()["ckpt"],
                               "m": {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}}})["m"])
    with pytest.raises(ValueError, match="Pile-T5"):  # e.g. a CLIP-L conditioning
        AuraDenoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(FileNotFoundError, match="pile_t5_tokenizer"):
        pile_t5_tokenizer(tmp_path / CHECKPOINT)


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["prompt"]


def test_examples_validate_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    assert EXAMPLES
    for path in EXAMPLES:
        with pytest.raises(ValidationReport) as info:  # the model files are missing here
            engine.prepare(_prompt(path))
        for node_id, entry in info.value.node_errors.items():
            for error in entry["errors"]:
                assert error["type"] == "value_not_in_list" and \
                    error["extra_info"].get("input_name") in FILE_INPUTS, (path.name, node_id, error)


@pytest.mark.slow
def test_example_runs_on_the_tiny_checkpoint(tiny_aura, tmp_path):
    prompt = _prompt(Path(__file__).parent / "auraflow_examples" / "aura_flow_0.1_example.json")
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    engine = Engine(EngineConfig(home=tiny_aura.home, output_dir=tmp_path / "out"))
    engine.run(engine.prepare(prompt)).raise_for_status()
    import numpy as np
    from PIL import Image

    images = list((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    with Image.open(images[0]) as img:
        assert img.size == (64, 64) and float(np.asarray(img, dtype=np.float32).std()) > 0


def test_shipped_configs_have_the_published_sizes():
    """AuraFlow's transformer is 6.8B parameters (fal's model card), Pile-T5-XL's encoder 1.29B; full-size tensor
    names (original layout, on the meta device) are detected back to the shipped config."""
    from accelerate import init_empty_weights
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

    with init_empty_weights():
        transformer = AuraFlowTransformer2DModel.from_config(shipped_config("transformer"))
        encoder = UMT5EncoderModel(UMT5Config(**shipped_config("text_encoder")))
    counts = [sum(p.numel() for p in m.parameters()) for m in (transformer, encoder)]
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
