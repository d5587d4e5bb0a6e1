"""Flux.2 [dev] through our nodes equals diffusers: each file layout loads with the diffusers modules' weights, and
the graphs UNETLoader + CLIPLoader(flux2) + VAELoader + CLIPTextEncode + FluxGuidance + EmptyFlux2LatentImage +
(SamplerCustomAdvanced with Flux2Scheduler | KSampler euler/simple) + VAEDecode give Flux2Pipeline's image with the
same noise and sigmas, ≤ 1/255. ComfyUI_examples' flux2 graph validates with only the model files missing and runs
on the tiny model saved under its file names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flux2_tiny import (
    LAYOUTS,
    TEXT_ENCODER,
    TEXT_ENCODER_HF,
    TEXT_LAYERS,
    VAE_DIFFUSERS,
    VAE_FILE,
    TinyFlux2,
    build,
)

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "the cat on the red car"
SEED, STEPS, SIZE, GUIDANCE = 7, 3, 64, 2.5
EXAMPLE = Path(__file__).parent / "flux2_examples" / "flux2_example.json"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyFlux2:
    return build(tmp_path_factory.mktemp("tiny-flux2-home"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def loaders(unet: str = LAYOUTS["comfyui"], clip: str = TEXT_ENCODER, vae: str = VAE_FILE) -> dict:
    return {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
            "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": clip, "type": "flux2", "device": "default"}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae}}}


def graph(custom: bool = True, guidance: float = GUIDANCE) -> dict:
    """ComfyUI's Flux.2 text-to-image graph (custom: the ComfyUI_examples one), image captured as "img"."""
    wf = dict(loaders(),
              pos={"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
              guid={"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": guidance}},
              empty={"class_type": "EmptyFlux2LatentImage", "inputs": {"width": SIZE, "height": SIZE,
                                                                        "batch_size": 1}},
              dec={"class_type": "VAEDecode", "inputs": {"samples": ["s", 0], "vae": ["vae", 0]}},
              img={"class_type": "Capture", "inputs": {"value": ["dec", 0]}})
    if custom:
        wf.update(
            noise={"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
            guider={"class_type": "BasicGuider", "inputs": {"model": ["unet", 0], "conditioning": ["guid", 0]}},
            sampler={"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            sigmas={"class_type": "Flux2Scheduler", "inputs": {"steps": STEPS, "width": SIZE, "height": SIZE}},
            s={"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
                "latent_image": ["empty", 0]}})
    else:
        wf.update(
            neg={"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
            s={"class_type": "KSampler", "inputs": {
                "model": ["unet", 0], "seed": SEED, "steps": STEPS, "cfg": 1.0, "sampler_name": "euler",
                "scheduler": "simple", "positive": ["guid", 0], "negative": ["neg", 0],
                "latent_image": ["empty", 0], "denoise": 1.0}})
    return wf


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


def _reference(tiny, sigmas=None) -> torch.Tensor:
    """Flux2Pipeline's image [1, H, W, 3] with our noise for SEED (its own schedule unless ``sigmas``)."""
    noise = make_noise((1, 128, SIZE // 16, SIZE // 16), torch.Generator("cpu").manual_seed(SEED))
    extra = {} if sigmas is None else {"sigmas": [float(s) for s in sigmas]}
    with torch.no_grad():
        out = tiny.pipeline(dynamic=sigmas is None)(
            prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
            text_encoder_out_layers=TEXT_LAYERS, output_type="pt", **extra).images
    return out.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    clip, vae = (TEXT_ENCODER_HF, VAE_DIFFUSERS) if layout == "diffusers" else (TEXT_ENCODER, VAE_FILE)
    wf = dict(loaders(LAYOUTS[layout], clip, vae),
              m={"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
              c={"class_type": "Capture", "inputs": {"value": ["clip", 0]}},
              v={"class_type": "Capture", "inputs": {"value": ["vae", 0]}})
    cap = _run(engine, wf)
    model, clip, vae = _get(cap["m"]), _get(cap["c"]), _get(cap["v"])
    assert model.family == "flux2" and model.arch == "flux2-dev" and model.flow.shift == 2.02
    lm = tiny.text_encoder.model.language_model.state_dict()
    lm = {k: v for k, v in lm.items() if not k.startswith("layers.3.")}  # only layers 0-2 are read
    for ours, ref in ((model.unet.state_dict(), tiny.transformer.state_dict()),
                      (clip.encoders[0].state_dict(), lm), (vae.vae.inner.state_dict(), tiny.vae.state_dict())):
        ours = {k: v for k, v in ours.items() if k != "norm.weight"}  # the final norm is not read
        ref = {k: v for k, v in ref.items() if k != "norm.weight"}
        assert set(ours) == set(ref)
        assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_text_states_equal_the_pipeline(engine, tiny):
    cap = _run(engine, dict(loaders(), pos={"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT,
                                                                                       "clip": ["clip", 0]}},
                            c={"class_type": "Capture", "inputs": {"value": ["pos", 0]}}))
    ours = cap["c"][0][0]
    with torch.no_grad():
        ref, _ = tiny.pipeline().encode_prompt(PROMPT, device="cpu", text_encoder_out_layers=TEXT_LAYERS)
    assert ours.shape == ref.shape == (1, 512, 96)
    assert torch.allclose(ours, ref.float(), atol=1e-5)


def test_custom_sampling_graph_equals_flux2_pipeline(engine, tiny):
    """The ComfyUI_examples graph shape (Flux2Scheduler + SamplerCustomAdvanced) = Flux2Pipeline's defaults."""
    image, reference = _run(engine, graph())["img"], _reference(tiny)
    assert image.shape == reference.shape == (1, SIZE, SIZE, 3)
    diff = float((image - reference).abs().max())
    print(f"Flux.2 parity (Flux2Scheduler): max |ours - Flux2Pipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_ksampler_graph_equals_flux2_pipeline(engine, tiny):
    """KSampler euler/simple on the model's own shift (2.02, ComfyUI's Flux.2 default) = the pipeline given
    those sigmas."""
    sigmas = flow_sigmas("simple", STEPS, FlowSettings("flux", 2.02))[:-1]
    image, reference = _run(engine, graph(custom=False))["img"], _reference(tiny, sigmas)
    diff = float((image - reference).abs().max())
    print(f"Flux.2 parity (KSampler): max |ours - Flux2Pipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255
    assert float((_run(engine, graph(guidance=6.0))["img"] - image).abs().max()) > 1 / 255  # guidance matters


def test_scheduler_node_equals_the_pipeline_schedule(tiny):
    from nodegraph.diffusion.flux2.sampling import empirical_mu, flux2_sigmas

    pipe = tiny.pipeline()
    for steps, size in ((4, 64), (20, 1024), (50, 1536)):
        tokens = (size // 16) ** 2
        pipe.scheduler.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)], mu=empirical_mu(tokens, steps))
        ours = flux2_sigmas(steps, size, size)
        assert ours.shape == (steps + 1,) and float(ours[-1]) == 0.0
        assert torch.allclose(ours, pipe.scheduler.sigmas.float(), atol=1e-6)


def test_vae_round_trip_is_normalised(engine, tiny):
    """VAEEncode gives Flux2Pipeline's packed, batch-norm normalised latent (``_encode_vae_image``)."""
    wf = {"vae": loaders()["vae"],
          "pic": {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                          "color": 0x3080D0}},
          "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["pic", 0], "vae": ["vae", 0]}},
          "lat": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
          "p": {"class_type": "Capture", "inputs": {"value": ["pic", 0]}}}
    cap = _run(engine, wf)
    with torch.no_grad():
        ref = tiny.pipeline()._encode_vae_image(cap["p"].movedim(-1, 1) * 2 - 1, None)
    assert cap["lat"]["samples"].shape == (1, 128, SIZE // 16, SIZE // 16)
    assert torch.allclose(cap["lat"]["samples"], ref, atol=1e-5)


def test_reference_latent_follows_the_pipeline_edit(engine, tiny):
    """ReferenceLatent (VAEEncode of an image) = Flux2Pipeline(image=...) multi-reference editing, "index" ids."""
    from PIL import Image

    wf = graph()
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": 0x3080D0}}
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["picture", 0], "vae": ["vae", 0]}}
    wf["ref"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["guid", 0], "latent": ["enc", 0]}}
    wf["guider"]["inputs"]["conditioning"] = ["ref", 0]
    image = _run(engine, wf)["img"]
    noise = make_noise((1, 128, SIZE // 16, SIZE // 16), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        ref = tiny.pipeline()(prompt=PROMPT, image=[Image.new("RGB", (SIZE, SIZE), (0x30, 0x80, 0xD0))], height=SIZE,
                              width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
                              text_encoder_out_layers=TEXT_LAYERS, output_type="pt").images.permute(0, 2, 3, 1)
    diff = float((image - ref).abs().max())
    effect = float((image - _run(engine, graph())["img"]).abs().max())  # what the reference changes
    print(f"Flux.2 edit parity: max |ours - Flux2Pipeline(image=)| = {diff:.2e}; the reference changes {effect:.2e}")
    assert diff <= 1 / 255 and diff < effect / 100


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tmp_path):
    from nodegraph.diffusion.flux2.loading import folder_tokenizer
    from nodegraph.diffusion.flux2.sampling import Flux2Denoiser

    model = _get(_run(engine, dict(loaders(), m={"class_type": "Capture", "inputs": {"value": ["unet", 0]}}))["m"])
    with pytest.raises(ValueError, match="flux2"):  # e.g. a CLIP-L conditioning
        Flux2Denoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(FileNotFoundError, match="tokenizer/ folder"):
        folder_tokenizer(tmp_path / TEXT_ENCODER, "mistral")


def _prompt() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]


def test_example_validates_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    with pytest.raises(ValidationReport) as info:  # the model files are missing here
        engine.prepare(_prompt())
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            assert error["type"] == "value_not_in_list" and \
                error["extra_info"].get("input_name") in FILE_INPUTS, (node_id, error)


def test_example_runs_on_the_tiny_model(tiny, tmp_path):
    prompt = _prompt()
    for node in prompt.values():
        if node["class_type"] in ("EmptyFlux2LatentImage", "Flux2Scheduler"):
            node["inputs"].update(width=SIZE, height=SIZE)
        if node["class_type"] == "Flux2Scheduler":
            node["inputs"].update(steps=2)
    from PIL import Image

    for node in prompt.values():  # the reference-image branch (bypassed in the example) still names its images
        if node["class_type"] == "LoadImage":
            (tiny.home / "input").mkdir(exist_ok=True)
            Image.new("RGB", (SIZE, SIZE), (200, 30, 30)).save(tiny.home / "input" / node["inputs"]["image"])
    engine = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    result = engine.run(engine.prepare(prompt))
    result.raise_for_status()
    images = list((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    import numpy as np

    with Image.open(images[0]) as img:
        assert img.size == (SIZE, SIZE)
        assert float(np.asarray(img, dtype=np.float32).std()) > 0


def test_reference_method_node_places_the_references(engine):
    """FluxKontextMultiReferenceLatentMethod: "offset" places the reference differently from Flux.2's "index";
    "index_timestep_zero" is refused naming the methods that run."""
    wf = graph()
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": 0x3080D0}}
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["picture", 0], "vae": ["vae", 0]}}
    wf["ref"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["guid", 0], "latent": ["enc", 0]}}
    wf["method"] = {"class_type": "FluxKontextMultiReferenceLatentMethod",
                    "inputs": {"conditioning": ["ref", 0], "reference_latents_method": "index"}}
    wf["guider"]["inputs"]["conditioning"] = ["method", 0]
    index = _run(engine, wf)["img"]
    wf["method"]["inputs"]["reference_latents_method"] = "offset"
    assert float((_run(engine, wf)["img"] - index).abs().max()) > 1e-4
    wf["method"]["inputs"]["reference_latents_method"] = "index_timestep_zero"
    with pytest.raises(Exception, match="index_timestep_zero"):
        _run(engine, wf)


def test_comfyui_fp8_file_loads_dequantised(engine, tiny):
    """ComfyUI's fp8 files (float8 weights, a ``weight_scale`` each, ``comfy_quant`` markers) load dequantised."""
    from safetensors.torch import load_file, save_file

    folder = tiny.home / "models" / "diffusion_models"
    state = load_file(str(folder / LAYOUTS["comfyui"]))
    quant = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2:
            scale = value.abs().max() / 448.0
            quant[key] = (value / scale).to(torch.float8_e4m3fn)
            quant[key[: -len("weight")] + "weight_scale"] = scale.reshape(())
            quant[key[: -len("weight")] + "comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'),
                                                                        dtype=torch.uint8)
        else:
            quant[key] = value
    path = folder / "flux2_tiny_fp8_scaled.safetensors"
    save_file(quant, str(path))
    try:
        wf = dict(loaders(path.name), m={"class_type": "Capture", "inputs": {"value": ["unet", 0]}})
        ours = _get(_run(engine, wf)["m"]).unet.state_dict()["x_embedder.weight"]
        ref = tiny.transformer.state_dict()["x_embedder.weight"]
        assert not torch.equal(ours, ref) and torch.allclose(ours, ref, atol=0.1 * float(ref.abs().max()))
    finally:
        path.unlink()


def test_tiled_decode_is_diffusers_tiling_of_the_inner_vae(engine, tiny):
    """VAEDecodeTiled on the Flux.2 VAE = AutoencoderKLFlux2's own tiled decode (64-pixel tiles = 8 of its latent
    cells, a quarter overlap) of the un-normalised, un-patchified latent."""
    from nodegraph.diffusion.flux2.vae import unpatchify

    wf = {"vae": loaders()["vae"],
          "pic": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 128, "batch_size": 1,
                                                          "color": 0x3080D0}},
          "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["pic", 0], "vae": ["vae", 0]}},
          "tiled": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["enc", 0], "vae": ["vae", 0],
                                                                "tile_size": 64, "overlap": 16,
                                                                "temporal_size": 64, "temporal_overlap": 8}},
          "z": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
          "b": {"class_type": "Capture", "inputs": {"value": ["tiled", 0]}}}
    cap = _run(engine, wf)
    vae = tiny.vae
    bn = vae.bn
    z = cap["z"]["samples"] * torch.sqrt(bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps) \
        + bn.running_mean.view(1, -1, 1, 1)
    vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = True, 64, 8, 0.25
    try:
        with torch.no_grad():
            ref = vae.decode(unpatchify(z)).sample
    finally:
        vae.use_tiling = False
    ref = (ref / 2 + 0.5).clamp(0, 1).movedim(1, -1)
    assert cap["b"].shape == ref.shape == (1, 128, 128, 3)
    assert float((cap["b"] - ref).abs().max()) < 1e-5
