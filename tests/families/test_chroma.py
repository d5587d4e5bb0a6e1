"""Chroma through our nodes equals diffusers: both layouts load the diffusers model's weights, the prompt encodes as
ComfyUI's Chroma tokenizer does (T5, end token, no padding), and the graph UNETLoader + CLIPLoader(chroma) +
VAELoader + CLIPTextEncode + EmptySD3LatentImage + KSampler (euler/simple) + VAEDecode gives ChromaPipeline's image
with the same noise, ≤ 1/255."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from chroma_tiny import LAYOUTS, build

from nodegraph.diffusion.flow.latents import pack

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE = 7, 4, 64

tiny_chroma = kit.tiny_fixture(build, "tiny-chroma-home")
engine = kit.engine_fixture("tiny_chroma")


def graph(unet: str = LAYOUTS["comfyui"]) -> dict:
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="chroma"),
        "vae": kit.node("VAELoader", vae_name="ae.safetensors"),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("unet", SEED, STEPS, 1.0),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
        "model": kit.capture("unet"),
        "c": kit.capture("clip"),
    }


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_chroma, layout):
    wf = graph(LAYOUTS[layout])
    model = kit.run(engine, {"unet": wf["unet"], "model": wf["model"]})["model"]
    kit.assert_same_weights(model.unet, tiny_chroma.transformer)
    assert model.family == "chroma" and model.flow.shift == 1.15


def test_prompt_encodes_as_comfyui_and_the_pipeline(engine, tiny_chroma):
    from nodegraph.diffusion.flow.text import encode_flow

    clip = kit.unwrap(kit.run(engine, {"clip": graph()["clip"], "c": graph()["c"]})["c"])
    (states, extras), = encode_flow(clip, PROMPT, "cpu")
    length = len(clip.tokenizers[0](PROMPT).input_ids)  # the words and the end token, no padding
    ref = tiny_chroma.pipeline().encode_prompt(PROMPT, do_classifier_free_guidance=False,
                                               max_sequence_length=length)[0]
    assert states.shape == ref.shape == (1, length, 32) and extras == {}
    assert torch.allclose(states, ref, atol=1e-6)


def test_graph_image_equals_chroma_pipeline(engine, tiny_chroma):
    cap = kit.run(engine, graph())
    clip = kit.unwrap(cap["c"])
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        ref = tiny_chroma.pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=1.0,
                                     latents=pack(noise), max_sequence_length=len(clip.tokenizers[0](PROMPT).input_ids),
                                     output_type="pt").images
    kit.assert_parity(cap["img"], kit.channels_last(ref), "Chroma parity vs ChromaPipeline")
