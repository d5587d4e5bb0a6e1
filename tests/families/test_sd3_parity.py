"""SD3.5 through our nodes equals diffusers: weights loaded from each layout and from the all-in-one checkpoint, and
the image of UNETLoader + TripleCLIPLoader + VAELoader + CLIPTextEncodeSD3 + ModelSamplingSD3 + EmptySD3LatentImage +
KSampler (euler/simple, cfg) + VAEDecode against StableDiffusion3Pipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import family_kit as kit
import numpy as np
import pytest
import torch
from sd3_tiny import CHECKPOINT, LAYOUTS, build

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE, CFG, SHIFT = 7, 4, 64, 4.5, 3.0

tiny_sd3 = kit.tiny_fixture(build, "tiny-sd3-home")
engine = kit.engine_fixture("tiny_sd3")


def encode_node(encode: str, text: str) -> dict:
    if encode == "CLIPTextEncodeSD3":
        return kit.node(encode, clip_l=text, clip_g=text, t5xxl=text, empty_padding="empty_prompt", clip=["clip", 0])
    return kit.node(encode, text=text, clip=["clip", 0])


def graph(unet: str | None = LAYOUTS["comfyui"], encode: str = "CLIPTextEncodeSD3", shift: float = SHIFT) -> dict:
    """SD3.5 text to image (split files, or the all-in-one checkpoint when ``unet`` is None), image as "img"."""
    if unet is None:
        loaders = {"ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)}
        model, clip, vae = ["ckpt", 0], ["ckpt", 1], ["ckpt", 2]
    else:
        loaders = {
            "unet": kit.unet_loader(unet),
            "clip": kit.node("TripleCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors",
                         clip_name3="t5xxl_fp16.safetensors"),
            "vae": kit.node("VAELoader", vae_name="sd3_vae.safetensors")}
        model, clip, vae = ["unet", 0], ["clip", 0], ["vae", 0]
    pos, neg = encode_node(encode, PROMPT), encode_node(encode, "")
    pos["inputs"]["clip"] = neg["inputs"]["clip"] = clip
    return {**loaders, "pos": pos, "neg": neg,
            "msd3": kit.node("ModelSamplingSD3", model=model, shift=shift),
            "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
            "ks": kit.ksampler("msd3", SEED, STEPS, CFG),
            "dec": kit.decode(vae=vae),
            "img": kit.capture("dec"),
            "model": kit.capture(*model)}


def _pipeline_image(tiny_sd3, shift: float = SHIFT, **kwargs) -> torch.Tensor:
    """StableDiffusion3Pipeline's image [1, H, W, 3]: ComfyUI's simple schedule (linear sigmas, shifted by the
    scheduler), the noise our KSampler draws for SEED, T5 padded to 77 tokens as ComfyUI's SD3 tokenizer."""
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    pipe = tiny_sd3.pipeline(shift)
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                   sigmas=list(np.linspace(1.0, 1.0 / STEPS, STEPS)), latents=noise, max_sequence_length=77,
                   output_type="pt", **kwargs).images
    return kit.channels_last(out)


@pytest.fixture(scope="module")
def reference(tiny_sd3):
    return _pipeline_image(tiny_sd3)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_sd3, layout):
    model = kit.run(engine, {"unet": graph(LAYOUTS[layout])["unet"], "model": kit.capture("unet")})["model"]
    kit.assert_same_weights(model.unet, tiny_sd3.transformer)
    assert model.family == "sd3" and model.arch == "sd3-3.5"
    assert list(model.unet.config.dual_attention_layers) == [0]


def test_graph_image_equals_sd3_pipeline(engine, reference):
    kit.assert_parity(kit.run(engine, graph())["img"], reference,
                      "SD3.5 parity (split files) vs StableDiffusion3Pipeline")


def test_checkpoint_image_equals_sd3_pipeline(engine, reference, tiny_sd3):
    cap = kit.run(engine, graph(None))
    kit.assert_same_weights(cap["model"].unet, tiny_sd3.transformer)
    kit.assert_parity(cap["img"], reference, "SD3.5 parity (all-in-one checkpoint) vs StableDiffusion3Pipeline")


def test_shift_changes_the_image_as_the_pipeline(engine, tiny_sd3, reference):
    image = kit.run(engine, graph(shift=6.0))["img"]
    assert kit.max_diff(image, reference) > 1 / 255
    kit.assert_parity(image, _pipeline_image(tiny_sd3, shift=6.0), "SD3.5 parity (shift 6)")


def test_clip_text_encode_equals_clip_text_encode_sd3(engine):
    """CLIPTextEncode gives every encoder the same text: the same conditioning as CLIPTextEncodeSD3."""
    wf = kit.add_captures(graph(), c1="pos")
    wf2 = kit.add_captures(graph(encode="CLIPTextEncode"), c1="pos")
    a, b = kit.run(engine, wf)["c1"], kit.run(engine, wf2)["c1"]
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])
