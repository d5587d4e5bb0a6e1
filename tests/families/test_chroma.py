"""Chroma through our nodes equals diffusers: both layouts load the diffusers model's weights, the prompt encodes as
ComfyUI's Chroma tokenizer does (T5, end token, no padding), and the graph UNETLoader + CLIPLoader(chroma) +
VAELoader + CLIPTextEncode + EmptySD3LatentImage + KSampler (euler/simple) + VAEDecode gives ChromaPipeline's image
with the same noise, ≤ 1/255."""

from __future__ import annotations

import pytest
import torch
from chroma_tiny import LAYOUTS, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.latents import pack
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE = 7, 4, 64


@pytest.fixture(scope="module")
def tiny_chroma(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-chroma-home"))


@pytest.fixture(scope="module")
def engine(tiny_chroma):
    cfg = EngineConfig(home=tiny_chroma.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = LAYOUTS["comfyui"]) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "chroma"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "seed": SEED, "steps": STEPS, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "model": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
        "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_chroma, layout):
    wf = graph(LAYOUTS[layout])
    model = _run(engine, {"unet": wf["unet"], "model": wf["model"]})["model"]
    ours, ref = model.unet.state_dict(), tiny_chroma.transformer.state_dict()
    assert set(ours) == set(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    assert model.family == "chroma" and model.flow.shift == 1.15


def test_prompt_encodes_as_comfyui_and_the_pipeline(engine, tiny_chroma):
    from nodegraph.diffusion.flow.text import encode_flow

    clip = _run(engine, {"clip": graph()["clip"], "c": graph()["c"]})["c"]
    clip = clip.get() if hasattr(clip, "get") else clip
    (states, extras), = encode_flow(clip, PROMPT, "cpu")
    length = len(clip.tokenizers[0](PROMPT).input_ids)  # the words and the end token, no padding
    ref = tiny_chroma.pipeline().encode_prompt(PROMPT, do_classifier_free_guidance=False,
                                               max_sequence_length=length)[0]
    assert states.shape == ref.shape == (1, length, 32) and extras == {}
    assert torch.allclose(states, ref, atol=1e-6)


def test_graph_image_equals_chroma_pipeline(engine, tiny_chroma):
    cap = _run(engine, graph())
    clip = cap["c"].get() if hasattr(cap["c"], "get") else cap["c"]
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        ref = tiny_chroma.pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=1.0,
                                     latents=pack(noise), max_sequence_length=len(clip.tokenizers[0](PROMPT).input_ids),
                                     output_type="pt").images.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"Chroma parity: max |ours - ChromaPipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255
