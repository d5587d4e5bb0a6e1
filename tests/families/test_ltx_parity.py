"""LTX-Video through our nodes equals diffusers: weights loaded from each layout, and the frames of ComfyUI's LTXV
text-to-video graph (CheckpointLoaderSimple + CLIPLoader(ltxv) + CLIPTextEncode ×2 + LTXVConditioning +
EmptyLTXVLatentVideo + LTXVScheduler + KSamplerSelect(euler) + SamplerCustom(cfg 3) + VAEDecode) against LTXPipeline
with the same noise and the prompt states of T5 with its padding masked (ComfyUI's and LTXConditionPipeline's
encoding), ≤ 1/255; image-to-video against LTXImageToVideoPipeline; 0.9.5+ causal positions against
LTXConditionPipeline."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from ltx_tiny import CHECKPOINT, LAYOUTS, TEXT, VAE_FILE, build
from safetensors.torch import load_file

from nodegraph.diffusion.detect import read_header
from nodegraph.diffusion.ltx.files import load_ltx_transformer, parameter_counts
from nodegraph.diffusion.ltx.sampling import ltx_sigmas
from nodegraph.diffusion.ltx.vae import ltx_vae_from_state

PROMPT = "a red cat walking on the sky"
NEGATIVE = "blue square"
SEED, STEPS, SIZE, LENGTH, CFG = 7, 4, 64, 9, 3.0


tiny_ltx = kit.tiny_fixture(build, "tiny-ltx-home")
engine = kit.engine_fixture("tiny_ltx")


def graph(frame_rate: float = 25.0, model: list | None = None, extra: dict | None = None) -> dict:
    """ComfyUI's LTXV text-to-video graph (frames captured as "img", the latent as "lat")."""
    wf = {
        "ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="ltxv", device="default"),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(NEGATIVE),
        "cond": kit.node("LTXVConditioning", positive=["pos", 0], negative=["neg", 0], frame_rate=frame_rate),
        "empty": kit.node("EmptyLTXVLatentVideo", width=SIZE, height=SIZE, length=LENGTH, batch_size=1),
        "sched": kit.node("LTXVScheduler", steps=STEPS, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                      latent=["empty", 0]),
        "sel": kit.node("KSamplerSelect", sampler_name="euler"),
        "sc": kit.node("SamplerCustom", model=model or ["ckpt", 0], add_noise=True, noise_seed=SEED, cfg=CFG,
                   positive=["cond", 0], negative=["cond", 1], sampler=["sel", 0], sigmas=["sched", 0],
                   latent_image=["empty", 0]),
        "dec": kit.node("VAEDecode", samples=["sc", 0], vae=["ckpt", 2]),
        "img": kit.capture("dec"),
        "lat": kit.capture("sc"),
    }
    wf.update(extra or {})
    return wf


@pytest.fixture(scope="module")
def reference(tiny_ltx):
    """LTXPipeline's frames [F, H, W, 3] with the noise our SamplerCustom draws for SEED."""
    frames = (LENGTH - 1) // 8 + 1
    noise = kit.seeded_noise((1, 128, frames, SIZE // 32, SIZE // 32), SEED)
    packed = noise.flatten(2).transpose(1, 2)
    pipe = tiny_ltx.pipeline()
    with torch.no_grad():
        out = pipe(height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG,
                   latents=packed, frame_rate=25, output_type="pt", **prompts(tiny_ltx)).frames
    return out[0].permute(0, 2, 3, 1).float()


def prompts(tiny_ltx) -> dict:
    """The prompt states as ComfyUI's LTXV text encoder makes them: T5 with the padding masked out (LTXPipeline's own
    encode_prompt leaves the mask out of T5; LTXConditionPipeline's, used here, keeps it)."""
    from diffusers import LTXConditionPipeline

    cond = LTXConditionPipeline(**tiny_ltx.pipeline().components)
    with torch.no_grad():
        pos, pos_mask, neg, neg_mask = cond.encode_prompt(PROMPT, NEGATIVE, True, max_sequence_length=128,
                                                          device="cpu")
    return {"prompt_embeds": pos, "prompt_attention_mask": pos_mask, "negative_prompt_embeds": neg,
            "negative_prompt_attention_mask": neg_mask}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_transformer_layouts_load_the_same_weights(tiny_ltx, layout):
    path = tiny_ltx.home / "models" / "diffusion_models" / LAYOUTS[layout]
    model = load_ltx_transformer(path, read_header(path), path.name)
    assert model.family == "ltxv" and model.arch == "ltxv-2b" and model.latent.channels == 128
    kit.assert_same_weights(model.unet, tiny_ltx.transformer)


@pytest.mark.parametrize("where", ["diffusers", "checkpoint"])
def test_vae_layouts_load_the_same_weights(tiny_ltx, where):
    models = tiny_ltx.home / "models"
    if where == "diffusers":
        state = load_file(str(models / "vae" / VAE_FILE))
    else:
        state = {k: v for k, v in load_file(str(models / "checkpoints" / CHECKPOINT)).items()
                 if k.startswith("vae.")}
    vae = ltx_vae_from_state(state, where)
    kit.assert_same_weights(vae.vae.inner, tiny_ltx.vae)
    assert vae.downscale == 32


def test_ltxv_scheduler_equals_the_pipeline_schedule(tiny_ltx):
    pipe = tiny_ltx.pipeline()
    import numpy as np
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift
    mu = calculate_shift(8, 1024, 4096, 0.95, 2.05)
    pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
    ours = ltx_sigmas(STEPS, 2.05, 0.95, True, 0.1, tokens=8)
    assert torch.allclose(ours, pipe.scheduler.sigmas.float(), atol=1e-6)
    assert float(ours[-2]) == pytest.approx(0.1)


def test_graph_frames_equal_ltx_pipeline(engine, reference):
    kit.assert_video_run(engine, graph(), reference, (LENGTH, SIZE, SIZE, 3), (1, 128, 2, SIZE // 32, SIZE // 32),
                         "ltx tiny run")


def test_frame_rate_changes_the_frames(engine, reference):
    cap = kit.run(engine, graph(frame_rate=8.0))
    assert kit.max_diff(cap["img"], reference) > 1 / 255


def test_split_files_give_the_same_frames(engine, reference):
    extra = {"unet": kit.unet_loader(LAYOUTS["diffusers"]), "vae": kit.node("VAELoader", vae_name=VAE_FILE)}
    wf = graph(model=["unet", 0], extra=extra)
    wf["dec"]["inputs"]["vae"] = ["vae", 0]
    cap = kit.run(engine, wf)
    assert kit.max_diff(cap["img"], reference) <= 1 / 255


def test_parameter_counts_of_the_shipped_configs():
    counts = parameter_counts()
    assert counts["transformer_2b"] == 1_923_385_472
    assert counts["transformer_13b"] == 13_042_569_344
    assert counts["vae_0.9.0"] == 419_193_649 and counts["vae_0.9.1"] == 934_991_538
    assert counts["vae_0.9.5"] == 1_246_913_522


def test_image_to_video_graph_equals_ltx_image_to_video_pipeline(tiny_ltx, engine):
    """LoadImage + LTXVImgToVideo (strength 1) + SamplerCustom against LTXImageToVideoPipeline: the first latent frame
    is the image's, its tokens see timestep 0 and keep their value; the rest is generated."""
    from diffusers import LTXImageToVideoPipeline
    from PIL import Image

    gen = torch.Generator("cpu").manual_seed(3)
    pixels = (torch.rand(SIZE, SIZE, 3, generator=gen) * 255).round().to(torch.uint8)
    (tiny_ltx.home / "input").mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(pixels.numpy())
    picture.save(tiny_ltx.home / "input" / "start.png")
    wf = graph()
    wf["load"] = kit.node("LoadImage", image="start.png")
    wf["i2v"] = kit.node("LTXVImgToVideo", positive=["cond", 0], negative=["cond", 1], vae=["ckpt", 2],
                         image=["load", 0],
                     width=SIZE, height=SIZE, length=LENGTH, batch_size=1, strength=1.0)
    wf["sched"]["inputs"]["latent"] = ["i2v", 2]
    wf["sc"]["inputs"].update(positive=["i2v", 0], negative=["i2v", 1], latent_image=["i2v", 2])
    cap = kit.run(engine, wf)

    base = tiny_ltx.pipeline()
    pipe = LTXImageToVideoPipeline(**base.components)
    noise = kit.seeded_noise((1, 128, 2, SIZE // 32, SIZE // 32), SEED)
    with torch.no_grad():
        video = pixels.permute(2, 0, 1).float().div(255.0).mul(2.0).sub(1.0)[None, :, None]
        z = tiny_ltx.vae.encode(video).latent_dist.mean
        mean, std = tiny_ltx.vae.latents_mean.view(1, -1, 1, 1, 1), tiny_ltx.vae.latents_std.view(1, -1, 1, 1, 1)
        start = noise.clone()
        start[:, :, :1] = (z - mean) / std
        out = pipe(image=picture, height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS,
                   guidance_scale=CFG, frame_rate=25, latents=start.flatten(2).transpose(1, 2), output_type="pt",
                   **prompts(tiny_ltx)).frames
    reference = out[0].permute(0, 2, 3, 1).float()
    assert torch.allclose(cap["lat"]["samples"][:, :, :1], start[:, :, :1], atol=1e-5)  # the image's frame is kept
    kit.assert_parity(cap["img"], reference, "ltx tiny image-to-video")


def test_causal_positions_of_0_9_5_files_equal_ltx_condition_pipeline(tiny_ltx, engine, reference):
    """A checkpoint whose metadata asks for causal temporal positions (0.9.5+) samples as LTXConditionPipeline
    (latent frame t at pixel frame max(0, 8t - 7)) on the same sigmas and noise; the 0.9.0 positions differ."""
    from ltx_tiny import CAUSAL

    wf = graph()
    wf["ckpt"]["inputs"]["ckpt_name"] = CAUSAL
    cap = kit.run(engine, wf)
    sigmas = ltx_sigmas(STEPS, 2.05, 0.95, True, 0.1, tokens=8)
    pipe = tiny_ltx.condition_pipeline()
    with torch.no_grad():
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=LENGTH,
                   timesteps=[float(s) * 1000.0 for s in sigmas[:-1]], guidance_scale=CFG, frame_rate=25,
                   max_sequence_length=128,
                   generator=torch.Generator("cpu").manual_seed(SEED), output_type="pt").frames
    kit.assert_parity(cap["img"], out[0].permute(0, 2, 3, 1).float(),
                      "ltx tiny causal positions vs LTXConditionPipeline")
    assert kit.max_diff(cap["img"], reference) > 1 / 255
