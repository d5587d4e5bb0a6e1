"""WanFirstLastFrameToVideo / WanFunInpaintToVideo: the first and last frames of a 36-channel Wan image-to-video
model through our nodes equal ``WanImageToVideoPipeline(image, last_image)`` (≤ 1/255, same noise); the mask keeps
one channel per pixel frame (the last frame given only in the last latent frame's fourth channel, as ComfyUI); the
Fun-inpaint node gives the same conditioning; a Wan 2.1 FLF2V model (image positions for two images) takes both
images' CLIP vision states as the pipeline's two-image embeds."""

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
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a green tree on a mountain"
SEED, STEPS, SIZE, LENGTH, CFG, SHIFT = 3, 4, 32, 9, 4.0, 8.0
I2V = "wan-tiny-i2v-flf.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import WanTransformer3DModel

    wan = build(tmp_path_factory.mktemp("tiny-wan-flf"))
    torch.manual_seed(9)
    i2v = WanTransformer3DModel(**dict(TRANSFORMER, in_channels=36)).eval()
    state = {k: v.contiguous().clone() for k, v in i2v.state_dict().items()}
    save_file({"model.diffusion_model." + k: v for k, v in to_original(state).items()},
              str(wan.home / "models" / "diffusion_models" / I2V))
    (wan.home / "input").mkdir(exist_ok=True)
    images = []
    for name, seed in (("first.png", 1), ("last.png", 2)):
        pixels = (np.random.default_rng(seed).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(wan.home / "input" / name)
        images.append(Image.fromarray(pixels))
    return wan, i2v, images


engine = kit.engine_fixture(home=lambda tiny: tiny[0].home)


def graph(node: str = "WanFirstLastFrameToVideo") -> dict:
    images = {"start_image": ["first", 0], "end_image": ["last", 0]}
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": I2V, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "wan"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILES["comfyui"]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "ms": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": SHIFT}},
        "first": {"class_type": "LoadImage", "inputs": {"image": "first.png"}},
        "last": {"class_type": "LoadImage", "inputs": {"image": "last.png"}},
        "flf": {"class_type": node, "inputs": dict({
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "length": LENGTH, "batch_size": 1}, **images)},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ms", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["flf", 0], "negative": ["flf", 1], "latent_image": ["flf", 2],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "cond": {"class_type": "Capture", "inputs": {"value": ["flf", 0]}},
    }


@pytest.mark.slow
def test_first_last_frames_equal_wan_i2v_pipeline_with_last_image(engine, tiny):
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
    )

    wan, i2v, (first, last) = tiny
    result, cap = run_captured(engine, graph())
    result.raise_for_status()
    mask = cap["cond"][0][1]["concat_mask"]
    frames = (LENGTH - 1) // 4 + 1
    assert mask.shape == (1, 4, frames, SIZE // 8, SIZE // 8)
    assert mask[0, :, 0].amax() == 0 and mask[0, :, 1:-1].amin() == 1
    assert mask[0, :, -1, 0, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS))
    # no image encoder (Wan 2.2-style I2V): the pipeline needs a boundary; both experts are this one model
    pipe = WanImageToVideoPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae,
                                   scheduler=scheduler, transformer=i2v, transformer_2=i2v, image_encoder=None,
                                   image_processor=None, boundary_ratio=0.9)
    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=i2v, vae=wan.vae,
                       scheduler=None)  # its prompt cleaning works without ftfy
    noise = make_noise((1, 16, frames, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(image=first, last_image=last, prompt_embeds=embeds, negative_prompt_embeds=negative, height=SIZE,
                   width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG,
                   guidance_scale_2=CFG, latents=noise, output_type="pt").frames
    ref = ref[0].permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan first/last frame to video: max |diff| {diff:.2e}")
    assert cap["img"].shape == ref.shape and diff <= 1 / 255
    # the last image mattered
    with torch.no_grad():
        alone = pipe(image=first, prompt_embeds=embeds, negative_prompt_embeds=negative, height=SIZE, width=SIZE,
                     num_frames=LENGTH, num_inference_steps=STEPS, guidance_scale=CFG, guidance_scale_2=CFG,
                     latents=noise, output_type="pt").frames
    assert float((cap["img"] - alone[0].permute(0, 2, 3, 1)).abs().max()) > 1 / 255


def test_fun_inpaint_gives_the_first_last_frame_conditioning(engine):
    caps = []
    for node in ("WanFirstLastFrameToVideo", "WanFunInpaintToVideo"):
        wf = {k: v for k, v in graph(node).items() if k not in ("ks", "dec", "img", "unet", "ms")}
        result, cap = run_captured(engine, wf)
        result.raise_for_status()
        caps.append(cap["cond"][0][1])
    for key in ("concat_latent_image", "concat_mask"):
        assert torch.equal(caps[0][key], caps[1][key])


IMAGE_DIM, IMAGE_TOKENS = 24, 5
FLF2V = "wan-tiny-flf2v.safetensors"


def _states(seed: int) -> torch.Tensor:
    return torch.randn((1, IMAGE_TOKENS, IMAGE_DIM), generator=torch.Generator().manual_seed(seed))


class StartEndVision(Node):
    """Fixed CLIP_VISION_OUTPUTs of the first and last frames (random penultimate states)."""

    INPUTS: ClassVar[dict] = {}
    OUTPUTS = (Output("CLIP_VISION_OUTPUT"), Output("CLIP_VISION_OUTPUT"))

    def execute(self, ctx):
        from nodegraph.diffusion.vision import ClipVisionOutput

        return tuple(ClipVisionOutput(last_hidden_state=s, image_embeds=s[:, 0], penultimate_hidden_states=s)
                     for s in (_states(31), _states(32)))


@pytest.mark.slow
def test_flf2v_with_both_clip_vision_outputs_equals_the_pipeline(tiny):
    """Wan 2.1 FLF2V (image embedder with positions for 2 images): both images' CLIP vision states, one after the
    other, reach the image cross-attention as WanImageToVideoPipeline's two-image embeds."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )

    wan, _, (first, last) = tiny
    torch.manual_seed(10)
    flf = WanTransformer3DModel(**dict(TRANSFORMER, in_channels=36, image_dim=IMAGE_DIM, added_kv_proj_dim=256,
                                       pos_embed_seq_len=2 * IMAGE_TOKENS)).eval()
    with torch.no_grad():
        flf.condition_embedder.image_embedder.pos_embed.copy_(torch.randn_like(
            flf.condition_embedder.image_embedder.pos_embed))
    state = {k: v.contiguous().clone() for k, v in flf.state_dict().items()}
    save_file({"model.diffusion_model." + k: v for k, v in to_original(state).items()},
              str(wan.home / "models" / "diffusion_models" / FLF2V))
    engine = capture_engine(EngineConfig(home=wan.home), (StartEndVision,))
    wf = graph()
    wf["unet"]["inputs"]["unet_name"] = FLF2V
    wf["vision"] = {"class_type": "StartEndVision", "inputs": {}}
    wf["flf"]["inputs"].update(clip_vision_start_image=["vision", 0], clip_vision_end_image=["vision", 1])
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    states = cap["cond"][0][1]["clip_vision_output"].penultimate_hidden_states
    assert torch.equal(states, torch.cat([_states(31), _states(32)], dim=1))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    scheduler.set_timesteps = functools.partial(scheduler.set_timesteps, sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS))
    pipe = WanImageToVideoPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, vae=wan.vae,
                                   scheduler=scheduler, transformer=flf, image_encoder=None, image_processor=None)
    pipe.check_inputs = lambda *args, **kwargs: None  # it refuses image_embeds beside the images the latents need
    text = WanPipeline(tokenizer=wan.tokenizer, text_encoder=wan.text_encoder, transformer=flf, vae=wan.vae,
                       scheduler=None)
    frames = (LENGTH - 1) // 4 + 1
    noise = make_noise((1, 16, frames, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        embeds, negative = text.encode_prompt(PROMPT, "", do_classifier_free_guidance=True, max_sequence_length=512)
        ref = pipe(image=first, last_image=last, prompt_embeds=embeds, negative_prompt_embeds=negative,
                   image_embeds=states.reshape(2, IMAGE_TOKENS, IMAGE_DIM), height=SIZE, width=SIZE, num_frames=LENGTH,
                   num_inference_steps=STEPS,
                   guidance_scale=CFG, latents=noise, output_type="pt").frames
    ref = ref[0].permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"wan 2.1 FLF2V with two CLIP vision outputs: max |diff| {diff:.2e}")
    assert diff <= 1 / 255
