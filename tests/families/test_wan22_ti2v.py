"""Wan 2.2 TI2V-5B through our nodes equals diffusers (≤ 1/255, same noise): text to video (UNETLoader + CLIPLoader
wan + VAELoader + Wan22ImageToVideoLatent without an image + KSampler + VAEDecode) against
``WanPipeline(expand_timesteps=True)``, and text-image to video (LoadImage as the start image, its latent frame at
timestep 0) against ``WanImageToVideoPipeline(expand_timesteps=True)``; both file layouts of the transformer and
of the Wan 2.2 VAE load the same weights; the original-layout VAE names are ComfyUI's."""

from __future__ import annotations

import json
from pathlib import Path

import family_kit as kit
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from wan22_tiny import LAYOUTS_5B, VAE22_FILES, TinyWan22, build22, vae22_to_original
from wan_tiny import TEXT

from nodegraph.diffusion.sampling import make_noise
from nodegraph.diffusion.video_models import wan22_vae
from nodegraph.diffusion.video_models.wan_files import load_wan_transformer
from nodegraph.diffusion.video_models.wan_vae import wan_vae_from_state

PROMPT = "a blue river on a mountain"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 5, 4, 64, 5, 5.0, 5.0
NAMES = Path(__file__).parent / "wan22_examples" / "comfyui_wan22_vae_names.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyWan22:
    wan = build22(tmp_path_factory.mktemp("tiny-wan22-5b"))
    image = (np.random.default_rng(4).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    (wan.home / "input").mkdir(exist_ok=True)
    Image.fromarray(image).save(wan.home / "input" / "start.png")
    return wan


engine = kit.engine_fixture()


def graph(start_image: bool, unet: str = LAYOUTS_5B["comfyui"], vae: str = VAE22_FILES["comfyui"]) -> dict:
    """ComfyUI's Wan 2.2 5B graph (frames captured as "img", the sampled latent as "lat")."""
    latent = {"vae": ["vae", 0], "width": SIZE, "height": SIZE, "length": LENGTH, "batch_size": 1}
    wf = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "wan", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "msd3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": SHIFT}},
        "empty": {"class_type": "Wan22ImageToVideoLatent", "inputs": latent},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["msd3", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "lat": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
        "start": {"class_type": "Capture", "inputs": {"value": ["empty", 0]}},
    }
    if start_image:
        wf["load"] = {"class_type": "LoadImage", "inputs": {"image": "start.png"}}
        latent["start_image"] = ["load", 0]
    return wf


def _noise() -> torch.Tensor:
    frames = (LENGTH - 1) // 4 + 1
    return make_noise((1, 48, frames, SIZE // 16, SIZE // 16), torch.Generator("cpu").manual_seed(SEED))


_run = kit.run


def _frames(out) -> torch.Tensor:
    return out[0].permute(0, 2, 3, 1).float()


@pytest.mark.slow
def test_comfyui_vae_names_convert_to_diffusers_names():
    """The original names (those of ComfyUI's Wan 2.2 VAE module, full size) map onto AutoencoderKLWan's."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan

    from nodegraph.diffusion.video_models.wan_files import shipped_config

    names = json.loads(NAMES.read_text(encoding="utf-8"))
    state = {k: torch.empty(shape, device="meta") for k, shape in names.items()}
    assert wan22_vae.is_wan22_vae(state)
    converted = wan22_vae.to_diffusers(state)
    with init_empty_weights():
        model = AutoencoderKLWan.from_config(shipped_config("vae_wan2.2"))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == want
    assert wan22_vae.config_from_state(converted, "full") == shipped_config("vae_wan2.2")
    assert set(vae22_to_original(dict(model.state_dict()))) == set(names)  # the tiny files use the same names


@pytest.mark.parametrize("layout", sorted(VAE22_FILES))
def test_vae_layouts_load_the_same_weights(tiny, layout):
    path = tiny.home / "models" / "vae" / VAE22_FILES[layout]
    vae = wan_vae_from_state(load_file(str(path)), path.name)
    assert vae.downscale == 16 and vae.vae.config.latent_channels == 48
    got, want = vae.vae.inner.state_dict(), tiny.vae.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("layout", sorted(LAYOUTS_5B))
def test_transformer_layouts_load_as_ti2v_5b(tiny, layout):
    path = tiny.home / "models" / "diffusion_models" / LAYOUTS_5B[layout]
    model = load_wan_transformer(path, None, path.name)
    assert (model.family, model.arch, model.latent.channels, model.latent.downscale) == \
        ("wan", "wan2.2-ti2v-5b", 48, 16)
    got, want = model.unet.state_dict(), tiny.transformer.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_text_to_video_equals_wan_pipeline_expand_timesteps(engine, tiny):
    cap = _run(engine, graph(start_image=False))
    assert "noise_mask" not in cap["start"] and cap["start"]["samples"].shape == (1, 48, 2, SIZE // 16, SIZE // 16)
    with torch.no_grad():
        ref = tiny.pipeline(SHIFT, STEPS)(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_frames=LENGTH,
                                          num_inference_steps=STEPS, guidance_scale=CFG, latents=_noise(),
                                          output_type="pt").frames
    ref = _frames(ref)
    assert cap["img"].shape == ref.shape == (LENGTH, SIZE, SIZE, 3)
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan 2.2 5B text to video: max |diff| {diff:.2e}")
    assert diff <= 1 / 255 and float(ref.std()) > 0.01
    # the diffusers-layout files give the same frames
    other = _run(engine, graph(False, LAYOUTS_5B["diffusers"], VAE22_FILES["diffusers"]))
    assert float((other["img"] - ref).abs().max()) <= 1 / 255


@pytest.mark.slow
def test_text_image_to_video_equals_wan_i2v_pipeline_expand_timesteps(engine, tiny):
    from diffusers import WanPipeline

    cap = _run(engine, graph(start_image=True))
    start = cap["start"]
    mask = start["noise_mask"]
    assert mask.shape == (1, 1, 2, SIZE // 16, SIZE // 16)
    assert float(mask[:, :, 0].max()) == 0.0 and float(mask[:, :, 1:].min()) == 1.0
    # the start frame comes out of sampling unchanged
    assert torch.allclose(cap["lat"]["samples"][:, :, 0], start["samples"][:, :, 0], atol=1e-5)
    image = Image.open(tiny.home / "input" / "start.png").convert("RGB")
    text = WanPipeline(tokenizer=tiny.base.tokenizer, text_encoder=tiny.base.text_encoder,
                       transformer=tiny.transformer, vae=tiny.vae, scheduler=None)  # prompt cleaning without ftfy
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = tiny.i2v_pipeline(SHIFT, STEPS)(image=image, prompt_embeds=embeds, negative_prompt_embeds=negative,
                                              height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS,
                                              guidance_scale=CFG, latents=_noise(), output_type="pt").frames
    ref = _frames(ref)
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan 2.2 5B text-image to video: max |diff| {diff:.2e}")
    assert diff <= 1 / 255
    # the start image mattered
    plain = _run(engine, graph(start_image=False))
    assert float((plain["img"] - ref).abs().max()) > 1 / 255


def test_noise_mask_on_a_wan21_latent_is_refused_with_the_reason(engine, tiny):
    from nodegraph.diffusion.video_models.wan22 import denoise_mask
    from nodegraph.diffusion.video_models.wan_files import load_wan_transformer as load

    path = tiny.home / "models" / "diffusion_models" / "wan2.1-tiny-comfyui.safetensors"
    model = load(path, None, path.name)
    samples = torch.zeros(1, 16, 2, 4, 4)
    with pytest.raises(ValueError, match="SetLatentNoiseMask"):
        denoise_mask(model, {"samples": samples, "noise_mask": torch.ones(1, 1, 2, 4, 4)}, samples)
