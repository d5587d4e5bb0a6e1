"""Wan 2.1 through our nodes equals diffusers: weights loaded from each layout, and the frames of the graph
UNETLoader + CLIPLoader(wan) + VAELoader + CLIPTextEncode ×2 + ModelSamplingSD3 + EmptyHunyuanLatentVideo + KSampler
(euler/simple, cfg 5) + VAEDecode against WanPipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from safetensors.torch import load_file
from wan_tiny import LAYOUTS, TEXT, VAE_FILES, build

from nodegraph.diffusion.video_models.wan_files import load_wan_transformer
from nodegraph.diffusion.video_models.wan_vae import wan_vae_from_state

PROMPT = "a red cat walking on the sky"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 7, 4, 32, 5, 5.0, 8.0


tiny_wan = kit.tiny_fixture(build, "tiny-wan-home")
engine = kit.engine_fixture("tiny_wan")


def graph(unet: str = LAYOUTS["comfyui"], vae: str = VAE_FILES["comfyui"], shift: float = SHIFT,
          sampler: str = "euler", length: int = LENGTH) -> dict:
    """ComfyUI's Wan 2.1 text-to-video graph (frames captured as "img", the latent as "lat")."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="wan", device="default"),
        "vae": kit.node("VAELoader", vae_name=vae),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "msd3": kit.node("ModelSamplingSD3", model=["unet", 0], shift=shift),
        "empty": kit.node("EmptyHunyuanLatentVideo", width=SIZE, height=SIZE, length=length, batch_size=1),
        "ks": kit.ksampler("msd3", SEED, STEPS, CFG, sampler),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
        "lat": kit.capture("ks"),
    }


@pytest.fixture(scope="module")
def reference(tiny_wan):
    """WanPipeline's frames [F, H, W, 3] with the noise our KSampler draws for SEED."""
    frames = (LENGTH - 1) // 4 + 1
    noise = kit.seeded_noise((1, 16, frames, SIZE // 8, SIZE // 8), SEED)
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
    kit.assert_same_weights(model.unet, tiny_wan.transformer)


@pytest.mark.parametrize("layout", sorted(VAE_FILES))
def test_vae_layouts_load_the_same_weights(tiny_wan, layout):
    path = tiny_wan.home / "models" / "vae" / VAE_FILES[layout]
    vae = wan_vae_from_state(load_file(str(path)), path.name)
    kit.assert_same_weights(vae.vae.inner, tiny_wan.vae)


def test_graph_frames_equal_wan_pipeline(engine, reference):
    kit.assert_video_run(engine, graph(), reference, (LENGTH, SIZE, SIZE, 3), (1, 16, 2, SIZE // 8, SIZE // 8),
                         "wan tiny run")


def test_diffusers_layout_files_give_the_same_frames(engine, reference):
    cap = kit.run(engine, graph(LAYOUTS["diffusers"], VAE_FILES["diffusers"]))
    assert kit.max_diff(cap["img"], reference) <= 1 / 255


def test_shift_changes_the_frames(engine, reference):
    cap = kit.run(engine, graph(shift=1.0))
    assert kit.max_diff(cap["img"], reference) > 1 / 255
