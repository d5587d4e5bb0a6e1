"""Wan 2.2 through our nodes equals diffusers: the A14B text-to-video graph (two UNETLoaders, two KSamplerAdvanced
step ranges: high-noise expert, then low-noise expert) against WanPipeline with ``transformer_2`` and a boundary, and
the image-to-video graph (LoadImage + WanImageToVideo on a 36-channel model) against WanImageToVideoPipeline; both
≤ 1/255 with the same noise."""

from __future__ import annotations

from typing import ClassVar

import family_kit as kit
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from wan_tiny import LAYOUTS, TEXT, TRANSFORMER, VAE_FILES, build, to_original

from nodegraph.api import Node, Output

PROMPT = "a green dog running on a river"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 11, 4, 32, 5, 4.0, 8.0
LOW, I2V, I2V21 = "wan2.2-tiny-low-noise.safetensors", "wan2.2-tiny-i2v.safetensors", "wan2.1-tiny-i2v.safetensors"
IMAGE_DIM, IMAGE_TOKENS = 24, 5
BOUNDARY = 0.9  # sigmas 1, 0.96 (high-noise expert) | 0.889, 0.727 (low-noise expert) at shift 8, 4 steps


def _save(module, path) -> None:
    state = {k: v.contiguous().clone() for k, v in module.state_dict().items()}
    save_file({"model.diffusion_model." + k: v for k, v in to_original(state).items()}, str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import WanTransformer3DModel

    wan = build(tmp_path_factory.mktemp("tiny-wan22-home"))
    torch.manual_seed(1)
    low = WanTransformer3DModel(**TRANSFORMER).eval()
    i2v = WanTransformer3DModel(**dict(TRANSFORMER, in_channels=36)).eval()
    i2v21 = WanTransformer3DModel(**dict(TRANSFORMER, in_channels=36, image_dim=IMAGE_DIM,
                                         added_kv_proj_dim=256)).eval()
    folder = wan.home / "models" / "diffusion_models"
    _save(low, folder / LOW)
    _save(i2v, folder / I2V)
    _save(i2v21, folder / I2V21)
    image = (np.random.default_rng(3).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    (wan.home / "input").mkdir(exist_ok=True)
    Image.fromarray(image).save(wan.home / "input" / "start.png")
    return wan, low, i2v, Image.fromarray(image), i2v21


class VisionStates(Node):
    """A fixed CLIP_VISION_OUTPUT (random penultimate states), standing in for CLIPVisionEncode."""

    INPUTS: ClassVar[dict] = {}
    OUTPUTS = (Output("CLIP_VISION_OUTPUT"),)

    def execute(self, ctx):
        from nodegraph.diffusion.vision import ClipVisionOutput

        states = vision_states()
        return (ClipVisionOutput(last_hidden_state=states, image_embeds=states[:, 0], penultimate_hidden_states=states),)


engine = kit.engine_fixture("tiny", (VisionStates,), home=lambda tiny: tiny[0].home)


def vision_states() -> torch.Tensor:
    return torch.randn((1, IMAGE_TOKENS, IMAGE_DIM), generator=torch.Generator().manual_seed(5))


def _common() -> dict:
    return {
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="wan"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILES["comfyui"]),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "img": kit.capture("dec"),
    }


def _advanced(model: str, latent: list, start: int, end: int, first: bool) -> dict:
    return kit.node("KSamplerAdvanced", model=[model, 0], add_noise="enable" if first else "disable", noise_seed=SEED,
                steps=STEPS, cfg=CFG, sampler_name="euler", scheduler="simple", positive=["pos", 0],
                negative=["neg", 0], latent_image=latent, start_at_step=start, end_at_step=end,
                return_with_leftover_noise="enable" if first else "disable")


def _i2v(unet: str, **vision: list) -> dict:
    """LoadImage + WanImageToVideo (with ``clip_vision_output`` if given) + KSampler on ``unet``, as "img"."""
    return dict(_common(), unet=kit.unet_loader(unet), ms=kit.node("ModelSamplingSD3", model=["unet", 0], shift=SHIFT),
                load=kit.node("LoadImage", image="start.png"),
                i2v=kit.node("WanImageToVideo", positive=["pos", 0], negative=["neg", 0], vae=["vae", 0], width=SIZE,
                         height=SIZE, length=LENGTH, batch_size=1, start_image=["load", 0], **vision),
                ks=kit.ksampler("ms", SEED, STEPS, CFG, positive=["i2v", 0], negative=["i2v", 1], latent=["i2v", 2]),
                dec=kit.decode())


def _noise() -> torch.Tensor:
    frames = (LENGTH - 1) // 4 + 1
    return kit.seeded_noise((1, 16, frames, SIZE // 8, SIZE // 8), SEED)


def _pipe_schedule(pipe, steps: int) -> None:
    import functools

    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, sigmas=np.linspace(1.0, 1.0 / steps, steps))
    pipe.scheduler = scheduler


def test_two_experts_equal_wan_pipeline_with_transformer_2(engine, tiny):
    from diffusers import WanPipeline

    wan, low = tiny[0], tiny[1]
    wf = dict(_common(), high=kit.unet_loader(LAYOUTS["comfyui"]), low=kit.unet_loader(LOW),
              ms_high=kit.node("ModelSamplingSD3", model=["high", 0], shift=SHIFT),
              ms_low=kit.node("ModelSamplingSD3", model=["low", 0], shift=SHIFT),
              empty=kit.node("EmptyHunyuanLatentVideo", width=SIZE, height=SIZE, length=LENGTH, batch_size=1),
              ks1=_advanced("ms_high", ["empty", 0], 0, 2, True), ks2=_advanced("ms_low", ["ks1", 0], 2, 10000, False),
              dec=kit.decode("ks2"))
    cap = kit.run(engine, wf)
    pipe = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=wan.transformer,
                       transformer_2=low, vae=wan.vae, scheduler=None, boundary_ratio=BOUNDARY)
    _pipe_schedule(pipe, STEPS)
    with torch.no_grad():
        ref = pipe(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS,
                   guidance_scale=CFG, guidance_scale_2=CFG, latents=_noise(), output_type="pt").frames
    kit.assert_parity(cap["img"], ref[0].permute(0, 2, 3, 1).float(), "wan 2.2 two experts")
    # the low-noise expert mattered: the high-noise model alone gives other frames
    single = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=wan.transformer,
                         vae=wan.vae, scheduler=None)
    _pipe_schedule(single, STEPS)
    with torch.no_grad():
        alone = single(PROMPT, negative_prompt="", height=SIZE, width=SIZE, num_frames=LENGTH,
                       num_inference_steps=STEPS, guidance_scale=CFG, latents=_noise(), output_type="pt").frames
    assert kit.max_diff(cap["img"], alone[0].permute(0, 2, 3, 1)) > 1 / 255


def test_image_to_video_equals_wan_i2v_pipeline(engine, tiny):
    from diffusers import WanImageToVideoPipeline

    wan, _, i2v, start, _ = tiny
    cap = kit.run(engine, _i2v(I2V))
    # Wan 2.2 I2V (no image encoder): the pipeline needs a boundary; both experts are this one model
    pipe = WanImageToVideoPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae,
                                   scheduler=None, transformer=i2v, transformer_2=i2v, image_encoder=None,
                                   image_processor=None, boundary_ratio=BOUNDARY)
    _pipe_schedule(pipe, STEPS)
    from diffusers import WanPipeline

    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=i2v, vae=wan.vae,
                       scheduler=None)  # its prompt cleaning works without ftfy, the I2V pipeline's does not
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(image=start, prompt_embeds=embeds, negative_prompt_embeds=negative, height=SIZE, width=SIZE,
                   num_frames=LENGTH,
                   num_inference_steps=STEPS, guidance_scale=CFG, guidance_scale_2=CFG, latents=_noise(),
                   output_type="pt").frames
    kit.assert_parity(cap["img"], ref[0].permute(0, 2, 3, 1).float(), "wan 2.2 image to video")


def test_wan21_image_to_video_with_clip_vision_equals_the_pipeline(engine, tiny):
    """Wan 2.1 I2V: the start image's CLIP vision states (penultimate layer) reach the image cross-attention."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    wan, start, i2v21 = tiny[0], tiny[3], tiny[4]
    cap = kit.run(engine, dict(_i2v(I2V21, clip_vision_output=["vision", 0]), vision=kit.node("VisionStates")))
    pipe = WanImageToVideoPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae,
                                   scheduler=None, transformer=i2v21, image_encoder=None, image_processor=None)
    _pipe_schedule(pipe, STEPS)
    pipe.check_inputs = lambda *args, **kwargs: None  # it refuses image_embeds beside the image the latents need
    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=i2v21, vae=wan.vae,
                       scheduler=None)
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(image=start, prompt_embeds=embeds, negative_prompt_embeds=negative, image_embeds=vision_states(),
                   height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG,
                   latents=_noise(), output_type="pt").frames
    kit.assert_parity(cap["img"], ref[0].permute(0, 2, 3, 1).float(), "wan 2.1 image to video (clip vision)")
