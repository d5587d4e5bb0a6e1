"""Cosmos Predict2 text-to-image through our nodes equals diffusers: each file loads with the diffusers modules'
weights, and the graph UNETLoader + CLIPLoader(cosmos) + VAELoader + CLIPTextEncode + EmptySD3LatentImage + KSampler
(euler/karras) + VAEDecode gives Cosmos2TextToImagePipeline's image (Karras sigmas ending at 0) with the same noise,
≤ 1/255. ComfyUI's EDM sigmas (simple, karras, normal) come from CosmosFlow as ComfyUI computes them. ComfyUI_examples'
cosmos_predict2 t2i graph validates with only the model files missing, and runs on the tiny model."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from cosmos_tiny import (
    LAYOUTS,
    TEXT_ENCODER,
    VAE_FILE,
    VIDEO_FILE,
    TinyCosmos,
    build,
    decode,
)

from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
NEGATIVE = "the green tree"
SEED, STEPS, SIZE = 7, 3, 64
EXAMPLES = sorted((Path(__file__).parent / "cosmos_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image"}


def _nearest_resize_shim() -> None:
    """diffusers' CosmosTransformer3DModel resizes its padding mask with torchvision, which is not installed here:
    a stand-in with torchvision's nearest resize of a tensor (the mask is all zeros, so any resize is exact)."""
    import diffusers.models.transformers.transformer_cosmos as module

    if hasattr(module, "transforms"):
        return

    def resize(x, size, interpolation=None):
        return torch.nn.functional.interpolate(x, size=list(size), mode="nearest")

    module.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                              InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


@pytest.fixture(scope="module")
def tiny_cosmos(tmp_path_factory: pytest.TempPathFactory) -> TinyCosmos:
    return build(tmp_path_factory.mktemp("tiny-cosmos-home"))


@pytest.fixture(scope="module")
def engine(tiny_cosmos):
    cfg = EngineConfig(home=tiny_cosmos.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = LAYOUTS["comfyui"], cfg: float = 1.0, scheduler: str = "karras") -> dict:
    """ComfyUI's cosmos_predict2 text-to-image graph, image captured as "img"."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT_ENCODER, "type": "cosmos",
                                                         "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["clip", 0]}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "seed": SEED, "steps": STEPS, "cfg": cfg, "sampler_name": "euler",
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
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


def _reference(tiny: TinyCosmos, cfg: float) -> torch.Tensor:
    """The pipeline's image for our KSampler's noise; its guidance_scale g is ComfyUI's cfg g + 1 (it guides as
    cond + g (cond - uncond))."""
    _nearest_resize_shim()
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        latents = tiny.pipeline()(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE,
                                  num_inference_steps=STEPS, guidance_scale=cfg - 1.0, latents=noise[:, :, None],
                                  output_type="latent").images
    return decode(tiny.vae, latents[:, :, None])[:1]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny_cosmos, layout):
    wf = {"unet": graph(LAYOUTS[layout])["unet"], "clip": graph()["clip"],
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    cap = _run(engine, wf)
    model, clip = _get(cap["m"]), _get(cap["c"])
    assert model.family == "cosmos" and model.flow.kind == "cosmos" and model.arch == "cosmos-predict2-t2i"
    for ours, ref in ((model.unet, tiny_cosmos.transformer), (clip.encoders[0], tiny_cosmos.text_encoder)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_graph_image_equals_cosmos2_pipeline(engine, tiny_cosmos, cfg):
    image = _run(engine, graph(cfg=cfg))["img"]
    reference = _reference(tiny_cosmos, cfg)
    assert image.shape == reference.shape
    diff = float((image - reference).abs().max())
    print(f"Cosmos Predict2 parity (cfg {cfg}): max |ours - Cosmos2TextToImagePipeline| = {diff:.2e} "
          f"(limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_edm_sigmas_are_comfyuis():
    """ComfyUI's ModelSamplingCosmosRFlow schedules: simple picks the log-spaced table (0.002 … 80), karras spans
    its ends, normal is linear in t = sigma / (sigma + 1); all end at 0."""
    from nodegraph.diffusion.cosmos.sampling import CosmosFlow, to_t
    from nodegraph.diffusion.flow.schedule import flow_sigmas

    flow = CosmosFlow()
    table = np.exp(np.linspace(np.log(0.002), np.log(80.0), 1000, dtype=np.float32)).astype(np.float64)
    simple = flow_sigmas("simple", 4, flow)
    assert np.allclose(simple[:-1], [table[-1 - int(i * 250)] for i in range(4)], rtol=1e-5) and simple[-1] == 0
    karras = flow_sigmas("karras", 3, flow)
    assert karras[0] == pytest.approx(80.0, rel=1e-5) and karras[2] == pytest.approx(0.002, rel=1e-4)
    normal = flow_sigmas("normal", 3, flow)
    assert np.allclose(normal[:-1] / (1 + normal[:-1]), np.linspace(80 / 81, 0.002 / 1.002, 3), atol=1e-6)
    assert torch.allclose(to_t(torch.tensor([80.0, 1.0, 0.0])), torch.tensor([80 / 81, 0.5, 0.0]))
    assert flow.percent_to_sigma(0.5) == pytest.approx(np.sqrt(0.002 * 80), rel=1e-4)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler's EDM SIGMAS + BasicGuider + euler (CUSTOM_SAMPLERS → the shared loop) equals KSampler."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import BasicGuider, RandomNoise

    wf = graph()
    for name, node in (("lat", "ks"), ("cond", "pos"), ("model", "unet"), ("empty_lat", "empty")):
        wf[name] = {"class_type": "Capture", "inputs": {"value": [node, 0]}}
    cap = _run(engine, wf)
    model = _get(cap["model"])
    sigmas = custom.model_schedule(model, "karras", STEPS, 1.0)
    assert float(sigmas[0]) == pytest.approx(80.0, rel=1e-5)
    out, _ = custom.sample_custom(BasicGuider(model, cap["cond"]), euler, sigmas, RandomNoise(SEED),
                                  cap["empty_lat"], DeviceManager(), model=model)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_scheduler_cfg_and_prompt_change_the_image(engine):
    """The parity above would not see a wrong schedule, guidance or prompt encoding if they did not matter."""
    base = _run(engine, graph())["img"]
    other = graph()
    other["pos"]["inputs"]["text"] = "blue square"
    for wf in (graph(scheduler="simple"), graph(cfg=3.0), other):
        assert float((_run(engine, wf)["img"] - base).abs().max()) > 1 / 255


def test_foreign_conditioning_and_wrong_text_encoder_are_clear(engine, tiny_cosmos, tmp_path):
    from nodegraph.diffusion.cosmos.sampling import CosmosDenoiser, rf_view

    model = _get(_run(engine, {"unet": graph()["unet"],
                               "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}})["m"])
    with pytest.raises(ValueError, match="type cosmos"):  # e.g. a CLIP-L conditioning
        CosmosDenoiser(rf_view(model), [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    denoiser = CosmosDenoiser(rf_view(model), [(torch.zeros(1, 512, 32), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(ValueError, match="16-channel"):  # e.g. an SD latent
        denoiser(torch.zeros(1, 4, 8, 8), 0.5)


def test_empty_cosmos_latent_video_shape(engine):
    wf = {"e": {"class_type": "EmptyCosmosLatentVideo", "inputs": {"width": 64, "height": 48, "length": 17,
                                                                    "batch_size": 2}},
          "l": {"class_type": "Capture", "inputs": {"value": ["e", 0]}}}
    assert tuple(_run(engine, wf)["l"]["samples"].shape) == (2, 16, 3, 6, 8)


def _prompt(path: Path, registry=None) -> dict:
    """The API prompt of an example: its "prompt", or its editor "workflow" converted with the catalogue."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if "prompt" in data:
        return data["prompt"]
    from nodegraph.ui_format import ui_to_api

    return ui_to_api(data["workflow"], registry)


def test_examples_validate_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    assert EXAMPLES
    for path in EXAMPLES:
        with pytest.raises(ValidationReport) as info:  # the model files are missing here
            engine.prepare(_prompt(path, engine.registry))
        for node_id, entry in info.value.node_errors.items():
            for error in entry["errors"]:
                assert error["type"] == "value_not_in_list" and \
                    error["extra_info"].get("input_name") in FILE_INPUTS, (path.name, node_id, error)


@pytest.mark.slow
def test_t2i_example_runs_on_the_tiny_model(tiny_cosmos, tmp_path):
    prompt = _prompt(Path(__file__).parent / "cosmos_examples" / "cosmos_predict2_2b_t2i_example.json")
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=64, height=64)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    engine = Engine(EngineConfig(home=tiny_cosmos.home, output_dir=tmp_path / "out"))
    engine.run(engine.prepare(prompt)).raise_for_status()
    from PIL import Image

    images = list((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    with Image.open(images[0]) as img:
        assert img.size == (64, 64) and float(np.asarray(img, dtype=np.float32).std()) > 0



@pytest.mark.parametrize("variant,count", [("t2i_2B", 1_956_405_248), ("t2i_14B", 14_265_265_152),
                                           ("v2w_2B", 1_956_413_440), ("v2w_14B", 14_265_285_632)])
def test_shipped_configs_have_the_published_sizes(variant, count):
    """Cosmos Predict2 2B and 14B (NVIDIA's model cards: 2B, 14B); full-size NVIDIA names (on the meta device)
    are detected back to the shipped config of the variant."""
    from accelerate import init_empty_weights
    from cosmos_tiny import to_original
    from diffusers import CosmosTransformer3DModel

    from nodegraph.diffusion.cosmos.detect import (
        shipped_config,
        transformer_config,
        transformer_layout,
    )

    shipped = shipped_config(f"transformer_{variant}")
    with init_empty_weights():
        model = CosmosTransformer3DModel.from_config(shipped)
    assert sum(p.numel() for p in model.parameters()) == count
    shapes = {k: tuple(v.shape) for k, v in to_original(model.state_dict()).items()}
    layout = transformer_layout(shapes)
    assert layout == ("net.", "original")
    config = transformer_config(shapes, *layout)[0]
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()} == shipped


def test_old_t5_config_has_the_published_size():
    """T5 v1.0 XXL's encoder (the 11B model's, Cosmos's text encoder): 4.9B parameters, ReLU feed-forward."""
    from accelerate import init_empty_weights
    from transformers import T5Config, T5EncoderModel

    from nodegraph.diffusion.cosmos.detect import shipped_config

    with init_empty_weights():
        model = T5EncoderModel(T5Config(**shipped_config("t5_old_xxl")))
    assert sum(p.numel() for p in model.parameters()) == 4_897_690_624


LENGTH, COLOR = 9, 0x3080D0


def video_graph(cfg: float = 1.0) -> dict:
    """ComfyUI's cosmos_predict2 image-to-video graph on an EmptyImage start, frames captured as "img"."""
    wf = graph(VIDEO_FILE, cfg=cfg)
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": COLOR}}
    wf["empty"] = {"class_type": "CosmosPredict2ImageToVideoLatent", "inputs": {
        "vae": ["vae", 0], "width": SIZE, "height": SIZE, "length": LENGTH, "batch_size": 1,
        "start_image": ["picture", 0]}}
    wf["pic"] = {"class_type": "Capture", "inputs": {"value": ["picture", 0]}}
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["empty", 0]}}
    return wf


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_video2world_graph_equals_cosmos2_video_pipeline(engine, tiny_cosmos, cfg, monkeypatch):
    """CosmosPredict2ImageToVideoLatent + KSampler on the video2world model equals Cosmos2VideoToWorldPipeline:
    the start frame given (its posterior mean; the pipeline's draw is pinned to the mean here), sigma_conditioning
    0 (ComfyUI feeds the given frame clean at time 0), fps 24 = the rope's base fps (ComfyUI does not modulate)."""
    import diffusers.pipelines.cosmos.pipeline_cosmos2_video2world as v2w
    from PIL import Image

    cap = _run(engine, video_graph(cfg))
    latent = cap["lat"]
    assert tuple(latent["samples"].shape) == (1, 16, 3, SIZE // 8, SIZE // 8)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0, 1.0]
    _nearest_resize_shim()
    monkeypatch.setattr(v2w, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        out.latent_dist.mode())
    noise = make_noise((1, 16, 3, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    with torch.no_grad():
        latents = tiny_cosmos.video_pipeline()(
            image=picture, prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=LENGTH,
            num_inference_steps=STEPS, guidance_scale=cfg - 1.0, fps=24, latents=noise, sigma_conditioning=0.0,
            output_type="latent").frames
    reference = decode(tiny_cosmos.vae, latents)
    assert cap["img"].shape == reference.shape
    diff = float((cap["img"] - reference).abs().max())
    print(f"Cosmos Predict2 video2world parity (cfg {cfg}): max |ours - Cosmos2VideoToWorldPipeline| = {diff:.2e}")
    assert diff <= 1 / 255


def test_video2world_start_image_steers_the_generated_frames(engine):
    """The given frame is kept, and the frames generated after it depend on it (so the parity above is a test of
    the conditioning, not only of the kept frame)."""
    a = _run(engine, video_graph())
    other = video_graph()
    other["picture"]["inputs"]["color"] = 0xD08030
    b = _run(engine, other)
    assert float((a["img"][1:] - b["img"][1:]).abs().max()) > 1 / 255


@pytest.mark.slow
def test_i2v_example_runs_on_the_tiny_model(tiny_cosmos, tmp_path):
    """ComfyUI_examples' image-to-video graph (editor format) on the tiny video2world model: 9 frames at 64²."""
    from PIL import Image

    config = EngineConfig(home=tiny_cosmos.home, output_dir=tmp_path / "out")
    engine = Engine(config)
    prompt = _prompt(Path(__file__).parent / "cosmos_examples" / "cosmos_predict2_2b_i2v_example.json",
                     engine.registry)
    for node in prompt.values():
        if node["class_type"] == "CosmosPredict2ImageToVideoLatent":
            node["inputs"].update(width=64, height=64, length=9)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
        if node["class_type"] == "LoadImage":
            config.input_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (80, 64), (40, 120, 200)).save(config.input_dir / node["inputs"]["image"])
    engine.run(engine.prepare(prompt)).raise_for_status()
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert outputs, "the example saves its video"


def test_image_to_video_latent_start_and_end_frames(engine):
    """CosmosPredict2ImageToVideoLatent with a start and an end image: both latent frames given (mask 0), the frame
    between them to generate at the Wan latent mean (ComfyUI's process_out of zero)."""
    from nodegraph.diffusion.video_models.wan_vae import latent_stats

    wf = video_graph()
    wf["empty"]["inputs"]["end_image"] = ["picture", 0]
    cap = _run(engine, {k: wf[k] for k in ("vae", "picture", "empty", "lat")})
    latent = cap["lat"]
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0, 0.0]
    mean = latent_stats(16)[0]
    assert torch.allclose(latent["samples"][:, :, 1:2], mean.expand(1, 16, 1, SIZE // 8, SIZE // 8))
    assert torch.allclose(latent["samples"][:, :, 0], latent["samples"][:, :, 2], atol=1e-5)  # the same image
