"""Flux.2 Klein through our nodes equals diffusers: a transformer without guidance embedding (ComfyUI's layout) and a
Qwen3 text encoder with its ``tokenizer/`` folder load with the diffusers modules' weights, and UNETLoader +
CLIPLoader(flux2) + VAELoader + CLIPTextEncode (prompt and empty negative) + EmptyFlux2LatentImage + KSampler
(cfg 2.5, euler/simple) + VAEDecode gives Flux2KleinPipeline's image with the same noise and sigmas, ≤ 1/255."""

from __future__ import annotations

import family_kit as kit
import torch
from flux2_tiny import (
    KLEIN_FILE,
    QWEN3_FILE,
    TEXT_LAYERS,
    VAE_FILE,
    build_klein,
)

PROMPT = "a photo of the red cat"
SEED, STEPS, SIZE, CFG = 11, 3, 64, 2.5

klein = kit.tiny_fixture(build_klein, "tiny-klein-home")
engine = kit.engine_fixture("klein")


def graph() -> dict:
    return {
        "unet": kit.unet_loader(KLEIN_FILE),
        "clip": kit.node("CLIPLoader", clip_name=QWEN3_FILE, type="flux2", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "empty": kit.empty_latent("EmptyFlux2LatentImage", SIZE),
        "ks": kit.ksampler("unet", SEED, STEPS, CFG),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
        "m": kit.capture("unet"),
        "c": kit.capture("clip"),
    }


def test_klein_loads_and_equals_flux2_klein_pipeline(engine, klein):
    cap = kit.run(engine, graph())
    model, clip = kit.unwrap(cap["m"]), kit.unwrap(cap["c"])
    assert model.arch == "flux2-klein" and not model.unet.config.guidance_embeds
    ref_lm = {k[len("model."):]: v for k, v in klein.text_encoder.state_dict().items()
              if k.startswith("model.") and not k.startswith(("model.layers.3.", "model.norm."))}
    ours = {k: v for k, v in clip.encoders[0].state_dict().items() if k != "norm.weight"}
    kit.assert_same_weights(ours, ref_lm)
    kit.assert_same_weights(model.unet, klein.transformer)

    noise = kit.seeded_noise((1, 128, SIZE // 16, SIZE // 16), SEED)
    with torch.no_grad():
        ref = klein.klein_pipeline()(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                     sigmas=kit.simple_sigmas(STEPS, 2.02, kind="flux"), guidance_scale=CFG,
                                     latents=noise, text_encoder_out_layers=TEXT_LAYERS, output_type="pt").images
    kit.assert_parity(cap["img"], kit.channels_last(ref), "Flux.2 Klein parity vs Flux2KleinPipeline")
