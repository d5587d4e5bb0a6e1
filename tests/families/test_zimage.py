"""Z-Image through our nodes equals diffusers: each file loads with the diffusers modules' weights, and ComfyUI's
graph UNETLoader + CLIPLoader(lumina2, a Qwen3 file) + VAELoader(ae) + CLIPTextEncode + ModelSamplingAuraFlow +
EmptySD3LatentImage + KSampler (euler/simple) + VAEDecode gives ZImagePipeline's image with the same noise and
sigmas, ≤ 1/255 (with and without cfg). ComfyUI_examples' z_image graph validates with only the model files
missing and runs on the tiny model saved under its file names; the shipped config has Z-Image's published size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lumina_tiny import QWEN3_FILE, VAE_FILE, Z_FILES, TinyLumina, build, z_image_to_comfyui

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT = 7, 3, 64, 3.0
EXAMPLE = Path(__file__).parent / "lumina_examples" / "z_image_turbo_example.json"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "ckpt_name"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLumina:
    return build(tmp_path_factory.mktemp("tiny-lumina-home"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = Z_FILES["comfyui"], cfg: float = 1.0, sampler: str = "euler") -> dict:
    """ComfyUI's Z-Image text-to-image graph (the editor's default), image captured as "img"."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": QWEN3_FILE, "type": "lumina2",
                                                         "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "aura": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["unet", 0], "shift": SHIFT}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["aura", 0], "seed": SEED, "steps": STEPS, "cfg": cfg, "sampler_name": sampler,
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


def reference(tiny: TinyLumina, guidance: float) -> torch.Tensor:
    """ZImagePipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    sigmas = flow_sigmas("simple", STEPS, FlowSettings("discrete", SHIFT, 1.0))[:-1]
    with torch.no_grad():
        out = tiny.z_image_pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                      sigmas=[float(s) for s in sigmas], guidance_scale=guidance, negative_prompt="",
                                      latents=noise, output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(Z_FILES))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    wf = {"unet": graph(Z_FILES[layout])["unet"], "clip": graph()["clip"],
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    cap = _run(engine, wf)
    model, clip = _get(cap["m"]), _get(cap["c"])
    assert model.family == "z_image" and clip.arch == "z_image"
    assert (model.flow.kind, model.flow.shift, model.flow.multiplier) == ("discrete", 3.0, 1.0)  # ComfyUI's ZImage
    for ours, ref in ((model.unet, tiny.z_image), (clip.encoders[0], tiny.qwen3)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_graph_image_equals_z_image_pipeline(engine, tiny, cfg):
    """ComfyUI's cfg c is the pipeline's guidance_scale c - 1 (it guides as pos + g·(pos - neg))."""
    image = _run(engine, graph(cfg=cfg))["img"]
    ref = reference(tiny, cfg - 1.0)
    assert image.shape == ref.shape == (1, SIZE, SIZE, 3)
    diff = float((image - ref).abs().max())
    print(f"Z-Image parity (cfg {cfg}): max |ours - ZImagePipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255
    assert float(image.std()) > 0.01


def test_res_multistep_and_cfg_change_the_image(engine):
    base = _run(engine, graph())["img"]
    for other in (graph(sampler="res_multistep"), graph(cfg=3.0)):
        image = _run(engine, other)["img"]
        assert image.shape == base.shape and float((image - base).abs().max()) > 1e-3


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tiny, tmp_path):
    import shutil

    from nodegraph.diffusion.lumina.loading import load_lumina_clip

    lonely = tmp_path / QWEN3_FILE
    shutil.copy(tiny.home / "models" / "text_encoders" / QWEN3_FILE, lonely)
    with pytest.raises(FileNotFoundError, match="qwen3_tokenizer/"):
        load_lumina_clip(lonely, QWEN3_FILE)
    from nodegraph.diffusion.lumina.sampling import ZImageDenoiser

    bad = torch.zeros(1, 4, 48)  # e.g. Gemma-width states: the sampler names the encoder to use
    model = _get(_run(engine, {"unet": graph()["unet"],
                               "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}})["m"])
    with pytest.raises(ValueError, match="CLIPLoader type lumina2"):
        ZImageDenoiser(model, [(bad, {})], [], 1.0, torch.float32, "cpu")


def test_shipped_config_has_the_published_size_and_is_detected():
    """Z-Image(-Turbo): 6,154,908,736 parameters ("6B"); detection reads the same config back from full-size
    tensor shapes in ComfyUI's layout (meta device, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import ZImageTransformer2DModel

    from nodegraph.diffusion.lumina.detect import detect_transformer, shipped_config

    with init_empty_weights():
        model = ZImageTransformer2DModel.from_config(shipped_config("z_image_transformer"))
    assert sum(p.numel() for p in model.parameters()) == 6_154_908_736
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in z_image_to_comfyui(model.state_dict()).items()}
    found = detect_transformer(shapes)
    assert found is not None and (found.family, found.layout) == ("z_image", "comfyui")
    assert found.config == shipped_config("z_image_transformer")


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["prompt"]


def test_example_validates_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    with pytest.raises(ValidationReport) as info:  # the model files are missing here
        engine.prepare(_prompt(EXAMPLE))
    names = set()
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            name = error["extra_info"].get("input_name")
            assert error["type"] == "value_not_in_list" and name in FILE_INPUTS, (node_id, error)
            names.add(name)
    assert names == {"unet_name", "clip_name", "vae_name"}


def test_example_runs_on_the_tiny_model(tiny, tmp_path):
    prompt = _prompt(EXAMPLE)
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=48, height=32)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    engine = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    engine.run(engine.prepare(prompt)).raise_for_status()
    images = list((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    import numpy as np
    from PIL import Image

    with Image.open(images[0]) as img:
        assert img.size == (48, 32)
        assert float(np.asarray(img, dtype=np.float32).std()) > 0


def test_sampler_custom_advanced_equals_ksampler(engine):
    """RandomNoise + BasicGuider + KSamplerSelect(euler) + BasicScheduler(simple) through SamplerCustomAdvanced (the
    shared custom loop with ZImageDenoiser) gives KSampler's latent."""
    wf = graph()
    wf.update({
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": ["aura", 0], "conditioning": ["pos", 0]}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sched": {"class_type": "BasicScheduler", "inputs": {"model": ["aura", 0], "scheduler": "simple",
                                                             "steps": STEPS, "denoise": 1.0}},
        "custom": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sched", 0],
            "latent_image": ["empty", 0]}},
        "a": {"class_type": "Capture", "inputs": {"value": ["custom", 0]}},
        "b": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
    })
    cap = _run(engine, wf)
    assert torch.allclose(cap["a"]["samples"], cap["b"]["samples"], atol=1e-5)


def test_fp8_storage_runs_close_to_full_precision(engine):
    """UNETLoader weight_dtype fp8_e4m3fn keeps the weights in 8 bits (diffusers' layerwise casting)."""
    full = _run(engine, graph())["img"]
    wf = graph()
    wf["unet"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    wf["m"] = {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}
    cap = _run(engine, wf)
    weight = _get(cap["m"]).unet.layers[0].attention.to_q.weight
    assert weight.dtype == torch.float8_e4m3fn
    diff = float((cap["img"] - full).abs().max())
    print(f"Z-Image fp8 storage: max |fp8 - full| = {diff:.2e}")
    assert 0 < diff < 0.1
