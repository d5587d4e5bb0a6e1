"""SD3.5 through our nodes equals diffusers: weights loaded from each layout and from the all-in-one checkpoint, and
the image of UNETLoader + TripleCLIPLoader + VAELoader + CLIPTextEncodeSD3 + ModelSamplingSD3 + EmptySD3LatentImage +
KSampler (euler/simple, cfg) + VAEDecode against StableDiffusion3Pipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sd3_tiny import CHECKPOINT, LAYOUTS, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE, CFG, SHIFT = 7, 4, 64, 4.5, 3.0


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-sd3-home"))


@pytest.fixture(scope="module")
def engine(tiny_sd3):
    cfg = EngineConfig(home=tiny_sd3.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def encode_node(encode: str, text: str) -> dict:
    if encode == "CLIPTextEncodeSD3":
        return {"class_type": encode, "inputs": {"clip_l": text, "clip_g": text, "t5xxl": text,
                                                 "empty_padding": "empty_prompt", "clip": ["clip", 0]}}
    return {"class_type": encode, "inputs": {"text": text, "clip": ["clip", 0]}}


def graph(unet: str | None = LAYOUTS["comfyui"], encode: str = "CLIPTextEncodeSD3", shift: float = SHIFT) -> dict:
    """SD3.5 text to image (split files, or the all-in-one checkpoint when ``unet`` is None), image as "img"."""
    if unet is None:
        loaders = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}}}
        model, clip, vae = ["ckpt", 0], ["ckpt", 1], ["ckpt", 2]
    else:
        loaders = {
            "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
            "clip": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                                  "clip_name2": "clip_g.safetensors",
                                                                  "clip_name3": "t5xxl_fp16.safetensors"}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "sd3_vae.safetensors"}}}
        model, clip, vae = ["unet", 0], ["clip", 0], ["vae", 0]
    pos, neg = encode_node(encode, PROMPT), encode_node(encode, "")
    pos["inputs"]["clip"] = neg["inputs"]["clip"] = clip
    return {**loaders, "pos": pos, "neg": neg,
            "msd3": {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": shift}},
            "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE,
                                                                      "batch_size": 1}},
            "ks": {"class_type": "KSampler", "inputs": {
                "model": ["msd3", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
                "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                "denoise": 1.0}},
            "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": vae}},
            "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
            "model": {"class_type": "Capture", "inputs": {"value": model}}}


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _pipeline_image(tiny_sd3, shift: float = SHIFT, **kwargs) -> torch.Tensor:
    """StableDiffusion3Pipeline's image [1, H, W, 3]: ComfyUI's simple schedule (linear sigmas, shifted by the
    scheduler), the noise our KSampler draws for SEED, T5 padded to 77 tokens as ComfyUI's SD3 tokenizer."""
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    pipe = tiny_sd3.pipeline(shift)
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                   sigmas=list(np.linspace(1.0, 1.0 / STEPS, STEPS)), latents=noise, max_sequence_length=77,
                   output_type="pt", **kwargs).images
    return out.permute(0, 2, 3, 1).float()


@pytest.fixture(scope="module")
def reference(tiny_sd3):
    return _pipeline_image(tiny_sd3)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_sd3, layout):
    model = _run(engine, {"unet": graph(LAYOUTS[layout])["unet"],
                          "model": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}})["model"]
    ours, ref = model.unet.state_dict(), tiny_sd3.transformer.state_dict()
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(ours[k], ref[k])][:3]
    assert model.family == "sd3" and model.arch == "sd3-3.5"
    assert list(model.unet.config.dual_attention_layers) == [0]


def test_graph_image_equals_sd3_pipeline(engine, reference):
    image = _run(engine, graph())["img"]
    assert image.shape == reference.shape
    diff = float((image - reference).abs().max())
    print(f"SD3.5 parity (split files): max |ours - StableDiffusion3Pipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_checkpoint_image_equals_sd3_pipeline(engine, reference, tiny_sd3):
    cap = _run(engine, graph(None))
    ours, ref = cap["model"].unet.state_dict(), tiny_sd3.transformer.state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    diff = float((cap["img"] - reference).abs().max())
    print(f"SD3.5 parity (all-in-one checkpoint): max |ours - StableDiffusion3Pipeline| = {diff:.2e}")
    assert diff <= 1 / 255


def test_shift_changes_the_image_as_the_pipeline(engine, tiny_sd3, reference):
    image = _run(engine, graph(shift=6.0))["img"]
    assert float((image - reference).abs().max()) > 1 / 255
    diff = float((image - _pipeline_image(tiny_sd3, shift=6.0)).abs().max())
    assert diff <= 1 / 255


def test_clip_text_encode_equals_clip_text_encode_sd3(engine):
    """CLIPTextEncode gives every encoder the same text: the same conditioning as CLIPTextEncodeSD3."""
    wf = graph()
    wf["c1"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
    wf2 = graph(encode="CLIPTextEncode")
    wf2["c1"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
    a, b = _run(engine, wf)["c1"], _run(engine, wf2)["c1"]
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])
