"""Wan 2.1 through our nodes equals diffusers: weights loaded from each layout, and the frames of the graph
UNETLoader + CLIPLoader(wan) + VAELoader + CLIPTextEncode ×2 + ModelSamplingSD3 + EmptyHunyuanLatentVideo + KSampler
(euler/simple, cfg 5) + VAEDecode against WanPipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import resource
import time

import pytest
import torch
from safetensors.torch import load_file
from wan_tiny import LAYOUTS, TEXT, VAE_FILES, TinyWan, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.diffusion.video_models.wan_files import load_wan_transformer
from nodegraph.diffusion.video_models.wan_vae import wan_vae_from_state
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a red cat walking on the sky"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 7, 4, 32, 5, 5.0, 8.0


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> TinyWan:
    return build(tmp_path_factory.mktemp("tiny-wan-home"))


@pytest.fixture(scope="module")
def engine(tiny_wan):
    cfg = EngineConfig(home=tiny_wan.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = LAYOUTS["comfyui"], vae: str = VAE_FILES["comfyui"], shift: float = SHIFT,
          sampler: str = "euler", length: int = LENGTH) -> dict:
    """ComfyUI's Wan 2.1 text-to-video graph (frames captured as "img", the latent as "lat")."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "wan", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "msd3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": shift}},
        "empty": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": SIZE, "height": SIZE,
                                                                      "length": length, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["msd3", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": sampler,
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "lat": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


@pytest.fixture(scope="module")
def reference(tiny_wan):
    """WanPipeline's frames [F, H, W, 3] with the noise our KSampler draws for SEED."""
    frames = (LENGTH - 1) // 4 + 1
    noise = make_noise((1, 16, frames, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    pipe = tiny_wan.pipeline(SHIFT, STEPS)
    with torch.no_grad():
        out = pipe(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS,
                   guidance_scale=CFG, latents=noise, output_type="pt").frames
    return out[0].permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_transformer_layouts_load_the_same_weights(tiny_wan, layout):
    path = tiny_wan.home / "models" / "diffusion_models" / LAYOUTS[layout]
    model = load_wan_transformer(path, None, path.name)
    assert model.family == "wan" and model.arch == "wan2.1-t2v"
    got, want = model.unet.state_dict(), tiny_wan.transformer.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("layout", sorted(VAE_FILES))
def test_vae_layouts_load_the_same_weights(tiny_wan, layout):
    path = tiny_wan.home / "models" / "vae" / VAE_FILES[layout]
    vae = wan_vae_from_state(load_file(str(path)), path.name)
    got, want = vae.vae.inner.state_dict(), tiny_wan.vae.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_graph_frames_equal_wan_pipeline(engine, reference):
    start = time.perf_counter()
    cap = _run(engine, graph())
    elapsed = time.perf_counter() - start
    frames = cap["img"]
    assert frames.shape == (LENGTH, SIZE, SIZE, 3) == reference.shape
    assert cap["lat"]["samples"].shape == (1, 16, 2, SIZE // 8, SIZE // 8)
    diff = float((frames - reference).abs().max())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wan tiny run: {elapsed:.2f} s, max |diff| {diff:.2e}, peak RSS {peak:.0f} MiB")
    assert diff <= 1 / 255
    assert float(frames.std()) > 0.01  # not a blank video


def test_diffusers_layout_files_give_the_same_frames(engine, reference):
    cap = _run(engine, graph(LAYOUTS["diffusers"], VAE_FILES["diffusers"]))
    assert float((cap["img"] - reference).abs().max()) <= 1 / 255


def test_shift_changes_the_frames(engine, reference):
    cap = _run(engine, graph(shift=1.0))
    assert float((cap["img"] - reference).abs().max()) > 1 / 255
