"""Flux.2 Klein through our nodes equals diffusers: a transformer without guidance embedding (ComfyUI's layout) and a
Qwen3 text encoder with its ``tokenizer/`` folder load with the diffusers modules' weights, and UNETLoader +
CLIPLoader(flux2) + VAELoader + CLIPTextEncode (prompt and empty negative) + EmptyFlux2LatentImage + KSampler
(cfg 2.5, euler/simple) + VAEDecode gives Flux2KleinPipeline's image with the same noise and sigmas, ≤ 1/255."""

from __future__ import annotations

import pytest
import torch
from flux2_tiny import (
    KLEIN_FILE,
    QWEN3_FILE,
    TEXT_LAYERS,
    VAE_FILE,
    TinyFlux2,
    build_klein,
)

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a photo of the red cat"
SEED, STEPS, SIZE, CFG = 11, 3, 64, 2.5


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory) -> TinyFlux2:
    return build_klein(tmp_path_factory.mktemp("tiny-klein-home"))


@pytest.fixture(scope="module")
def engine(klein):
    cfg = EngineConfig(home=klein.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph() -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": KLEIN_FILE, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": QWEN3_FILE, "type": "flux2",
                                                         "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "empty": {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
        "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}},
    }


def test_klein_loads_and_equals_flux2_klein_pipeline(engine, klein):
    result, cap = run_captured(engine, graph())
    result.raise_for_status()
    model, clip = cap["m"].get() if hasattr(cap["m"], "get") else cap["m"], \
        cap["c"].get() if hasattr(cap["c"], "get") else cap["c"]
    assert model.arch == "flux2-klein" and not model.unet.config.guidance_embeds
    ref_lm = {k[len("model."):]: v for k, v in klein.text_encoder.state_dict().items()
              if k.startswith("model.") and not k.startswith(("model.layers.3.", "model.norm."))}
    ours = {k: v for k, v in clip.encoders[0].state_dict().items() if k != "norm.weight"}
    assert set(ours) == set(ref_lm) and all(torch.equal(ours[k], ref_lm[k]) for k in ref_lm)
    a, b = model.unet.state_dict(), klein.transformer.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)

    sigmas = flow_sigmas("simple", STEPS, FlowSettings("flux", 2.02))[:-1]
    noise = make_noise((1, 128, SIZE // 16, SIZE // 16), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        ref = klein.klein_pipeline()(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                     sigmas=[float(s) for s in sigmas], guidance_scale=CFG, latents=noise,
                                     text_encoder_out_layers=TEXT_LAYERS, output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"Flux.2 Klein parity: max |ours - Flux2KleinPipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert cap["img"].shape == ref.shape and diff <= 1 / 255
