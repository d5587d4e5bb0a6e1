"""Wan VACE: a VACE transformer file in ComfyUI's layout (``vace_blocks``, ``vace_patch_embedding``) loads as
``WanVACETransformer3DModel`` with ComfyUI's control-layer spacing, and the reference-image graph of
ComfyUI_examples (WanVaceToVideo + KSampler + TrimVideoLatent by ``trim_latent``) equals ``WanVACEPipeline`` with the
same reference image and noise (≤ 1/255), as does a control video with per-pixel masks; the strength input scales
the control."""

from __future__ import annotations

import functools
from typing import ClassVar

import family_kit as kit
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from wan_tiny import TEXT, TRANSFORMER, VAE_FILES, build, to_original

from nodegraph.api import Node, Output
from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.diffusion.video_models.wan_files import load_wan_transformer
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a red dog walking on a river"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 6, 4, 32, 5, 5.0, 8.0
VACE = "wan-tiny-vace.safetensors"


def vace_to_original(state: dict) -> dict:
    """ComfyUI's names for a diffusers WanVACETransformer3DModel state dict."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("vace_blocks."):
            key = key.replace(".proj_in.", ".before_proj.").replace(".proj_out.", ".after_proj.")
        renamed[key] = value
    return {"model.diffusion_model." + k: v for k, v in to_original(renamed).items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import WanVACETransformer3DModel

    wan = build(tmp_path_factory.mktemp("tiny-wan-vace"))
    torch.manual_seed(12)
    vace = WanVACETransformer3DModel(**TRANSFORMER, vace_layers=[0], vace_in_channels=96).eval()
    with torch.no_grad():  # random control projections (zero at init) and modulation, so the control shows
        for name, p in vace.named_parameters():
            if name.startswith("vace_blocks") and ("proj_in" in name or "proj_out" in name):
                p.copy_(torch.randn_like(p) * 0.2)
            elif "scale_shift_table" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    state = {k: v.contiguous().clone() for k, v in vace.state_dict().items()}
    save_file(vace_to_original(state), str(wan.home / "models" / "diffusion_models" / VACE))
    (wan.home / "input").mkdir(exist_ok=True)
    pixels = (np.random.default_rng(7).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(wan.home / "input" / "ref.png")
    return wan, vace, Image.fromarray(pixels)


engine = kit.engine_fixture(home=lambda tiny: tiny[0].home)


def graph(strength: float = 1.0) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": VACE, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "wan"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILES["comfyui"]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "ms": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": SHIFT}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "vace": {"class_type": "WanVaceToVideo", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "length": LENGTH, "batch_size": 1, "strength": strength, "reference_image": ["ref", 0]}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ms", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["vace", 0], "negative": ["vace", 1], "latent_image": ["vace", 2],
            "denoise": 1.0}},
        "trim": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["ks", 0], "trim_amount": ["vace", 3]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["trim", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "cond": {"class_type": "Capture", "inputs": {"value": ["vace", 0]}},
    }


def test_vace_file_loads_with_comfyui_control_layers(tiny):
    path = tiny[0].home / "models" / "diffusion_models" / VACE
    model = load_wan_transformer(path, None, path.name)
    assert model.arch == "wan2.1-vace" and list(model.unet.config.vace_layers) == [0]
    got, want = model.unet.state_dict(), tiny[1].state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_reference_image_graph_equals_wan_vace_pipeline(engine, tiny):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanVACEPipeline

    wan, vace, ref_image = tiny
    result, cap = run_captured(engine, graph())
    result.raise_for_status()
    extras = cap["cond"][0][1]
    frames = (LENGTH - 1) // 4 + 1
    assert extras["vace_frames"][0].shape == (1, 32, frames + 1, SIZE // 8, SIZE // 8)
    assert extras["vace_mask"][0].shape == (1, 64, frames + 1, SIZE // 8, SIZE // 8)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS))
    pipe = WanVACEPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=vace, vae=wan.vae,
                           scheduler=scheduler)
    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=vace, vae=wan.vae,
                       scheduler=None)  # its prompt cleaning works without ftfy
    noise = make_noise((1, 16, frames + 1, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(reference_images=[ref_image], prompt_embeds=embeds, negative_prompt_embeds=negative, height=SIZE,
                   width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG, latents=noise,
                   output_type="pt").frames
    ref = ref[0].permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan VACE reference to video: max |diff| {diff:.2e}")
    assert cap["img"].shape == ref.shape == (LENGTH, SIZE, SIZE, 3) and diff <= 1 / 255
    # the control mattered: strength 0 gives other frames
    _, weak = run_captured(engine, graph(strength=0.0))
    assert float((weak["img"] - cap["img"]).abs().max()) > 1 / 255


EXAMPLE = "vace_reference_to_video.json"  # comfyanonymous/ComfyUI_examples wan/, at f9431bb
EXAMPLE_FILES = {"unet_name": "wan2.1_vace_14B_fp16.safetensors", "vae_name": "wan_2.1_vae.safetensors",
                 "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "image": "fennec_girl_sing.png"}


def _example(engine) -> dict:
    import json
    from pathlib import Path

    from nodegraph.ui_format import ui_to_api

    path = Path(__file__).parent / "wan22_examples" / EXAMPLE
    return ui_to_api(json.loads(path.read_text(encoding="utf-8")), engine.registry)


def test_example_validates_but_for_the_missing_files(tmp_path):
    from nodegraph.engine import Engine
    from nodegraph.validation import ValidationReport

    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = _example(engine)
    assert {k: v for n in prompt.values() for k, v in n["inputs"].items() if k in EXAMPLE_FILES} == EXAMPLE_FILES
    with pytest.raises(ValidationReport) as info:
        engine.prepare(prompt)
    missing = {e["extra_info"]["input_name"] for entry in info.value.node_errors.values() for e in entry["errors"]
               if e["type"] == "value_not_in_list"}
    errors = [e for entry in info.value.node_errors.values() for e in entry["errors"]]
    assert missing == set(EXAMPLE_FILES) and len(errors) == len(EXAMPLE_FILES), errors


@pytest.mark.slow
def test_example_runs_on_the_tiny_vace(tiny, tmp_path):
    import shutil

    from nodegraph.engine import Engine

    home = tiny[0].home
    models = home / "models"
    shutil.copy(models / "diffusion_models" / VACE, models / "diffusion_models" / EXAMPLE_FILES["unet_name"])
    shutil.copy(models / "text_encoders" / TEXT, models / "text_encoders" / EXAMPLE_FILES["clip_name"])
    shutil.copy(home / "input" / "ref.png", home / "input" / EXAMPLE_FILES["image"])
    engine = Engine(EngineConfig(home=home, output_dir=tmp_path / "out"))
    prompt = _example(engine)
    for node in prompt.values():
        if node["class_type"] == "WanVaceToVideo":
            node["inputs"].update(width=SIZE, height=SIZE, length=LENGTH)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    engine.run(engine.prepare(prompt)).raise_for_status()
    webp = next((tmp_path / "out").rglob("*.webp"))
    with Image.open(webp) as im:  # the reference frame is trimmed: LENGTH frames remain
        assert im.size == (SIZE, SIZE) and getattr(im, "n_frames", 1) == LENGTH
    assert sorted(p.suffix for p in (tmp_path / "out").rglob("*") if p.is_file()) == [".webm", ".webp"]


CONTROL = np.random.default_rng(21).integers(0, 256, (LENGTH, SIZE, SIZE, 3), dtype=np.uint8)
MASK = (np.random.default_rng(22).random((LENGTH, SIZE, SIZE)) > 0.5).astype(np.uint8) * 255


class ControlClip(Node):
    """The fixed control video (IMAGE) and its binary mask (MASK)."""

    INPUTS: ClassVar[dict] = {}
    OUTPUTS = (Output("IMAGE"), Output("MASK"))

    def execute(self, ctx):
        return (torch.from_numpy(CONTROL).float() / 255.0, torch.from_numpy(MASK).float() / 255.0)


@pytest.mark.slow
def test_control_video_with_masks_equals_wan_vace_pipeline(tiny):
    """Control video and per-pixel masks (the 64 mask channels of each 8 × 8 cell) as WanVACEPipeline reads them."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanVACEPipeline

    wan, vace, _ = tiny
    engine = capture_engine(EngineConfig(home=wan.home), (ControlClip,))
    wf = graph()
    wf["clip_in"] = {"class_type": "ControlClip", "inputs": {}}
    wf["vace"]["inputs"].update(control_video=["clip_in", 0], control_masks=["clip_in", 1])
    del wf["vace"]["inputs"]["reference_image"]
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS))
    pipe = WanVACEPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=vace, vae=wan.vae,
                           scheduler=scheduler)
    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=vace, vae=wan.vae,
                       scheduler=None)
    frames = (LENGTH - 1) // 4 + 1
    noise = make_noise((1, 16, frames, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    video = [Image.fromarray(f) for f in CONTROL]
    masks = [Image.fromarray(m).convert("RGB") for m in MASK]
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(video=video, mask=masks, prompt_embeds=embeds, negative_prompt_embeds=negative, height=SIZE,
                   width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG, latents=noise,
                   output_type="pt").frames
    ref = ref[0].permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan VACE control video + masks: max |diff| {diff:.2e}")
    assert cap["img"].shape == ref.shape and diff <= 1 / 255
