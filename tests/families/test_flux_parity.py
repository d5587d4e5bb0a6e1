"""Flux.1 through our nodes equals diffusers: weights loaded from each layout, and the image of the graph
UNETLoader + DualCLIPLoader + VAELoader + CLIPTextEncode(Flux) + FluxGuidance + EmptySD3LatentImage + KSampler
(euler/simple) + VAEDecode against FluxPipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from flux_tiny import LAYOUTS

from nodegraph.diffusion.flow.latents import pack

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE = 7, 4, 64

engine = kit.engine_fixture("tiny_flux")
_run = kit.run  # the name test_gaps_* import


def graph(unet: str, encode: str = "CLIPTextEncode", guidance: float = 3.5, sampler: str = "euler",
          scheduler: str = "simple", weight_dtype: str = "default") -> dict:
    """The Flux text-to-image graph of ComfyUI's examples, image captured as "img", model as "model"."""
    text = ({"text": PROMPT} if encode == "CLIPTextEncode" else
            {"clip_l": PROMPT, "t5xxl": PROMPT, "guidance": guidance})
    return {
        "unet": kit.unet_loader(unet, weight_dtype),
        "clip": kit.node("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                     type="flux"),
        "vae": kit.node("VAELoader", vae_name="ae.safetensors"),
        "pos": kit.node(encode, **text, clip=["clip", 0]),
        "guide": kit.node("FluxGuidance", conditioning=["pos", 0], guidance=guidance),
        "neg": kit.node("CLIPTextEncode", text="", clip=["clip", 0]),
        "msf": kit.node("ModelSamplingFlux", model=["unet", 0], max_shift=1.15, base_shift=0.5, width=SIZE,
                        height=SIZE),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("msf", SEED, STEPS, 1.0, sampler, scheduler, positive=["guide", 0]),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
        "model": kit.capture("unet"),
    }


@pytest.fixture(scope="module")
def reference(tiny_flux):
    """FluxPipeline's image [1, H, W, 3] with the noise our KSampler draws for SEED."""
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    pipe = tiny_flux.pipeline()
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=3.5,
                   latents=pack(noise), max_sequence_length=256, output_type="pt").images
    return kit.channels_last(out)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_flux, layout):
    model = kit.run(engine, {"unet": graph(LAYOUTS[layout])["unet"], "model": kit.capture("unet")})["model"]
    kit.assert_same_weights(model.unet, tiny_flux.transformer)
    assert model.arch == "flux-dev" and model.family == "flux"


@pytest.mark.parametrize("encode", ["CLIPTextEncode", "CLIPTextEncodeFlux"])
def test_graph_image_equals_flux_pipeline(engine, reference, encode):
    image = kit.run(engine, graph(LAYOUTS["comfyui"], encode=encode))["img"]
    kit.assert_parity(image, reference, f"Flux parity ({encode}) vs FluxPipeline")


def test_guidance_changes_the_image(engine, reference):
    image = kit.run(engine, graph(LAYOUTS["original"], guidance=8.0))["img"]
    assert kit.max_diff(image, reference) > 1 / 255


def test_custom_sampling_equals_ksampler(engine, tiny_flux, flux_config):
    """BasicScheduler + BasicGuider + euler through ``flow.custom`` equals KSampler on the same model and noise."""
    from nodegraph.diffusion.guiders import BasicGuider

    cap = kit.run(engine, kit.add_captures(graph(LAYOUTS["comfyui"]), lat="ks", cond="guide", shifted="msf",
                                   empty_lat="empty"))
    model = kit.unwrap(cap["shifted"])
    out, denoised = kit.custom_sample(model, BasicGuider(model, cap["cond"]), cap["empty_lat"], STEPS, SEED)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)
    assert denoised["samples"].shape == out["samples"].shape


def test_kontext_reference_equals_flux_kontext_pipeline(engine, tiny_flux):
    """EmptyImage → VAEEncode → ReferenceLatent on the positive equals FluxKontextPipeline(image=...) ≤ 1/255."""
    from diffusers import FluxKontextPipeline
    from PIL import Image

    wf = graph(LAYOUTS["comfyui"])
    wf["picture"] = kit.empty_image(SIZE, SIZE, 0x3080D0)
    wf["encoded"] = kit.node("VAEEncode", pixels=["picture", 0], vae=["vae", 0])
    wf["ref"] = kit.node("ReferenceLatent", conditioning=["guide", 0], latent=["encoded", 0])
    wf["ks"]["inputs"]["positive"] = ["ref", 0]
    cap = kit.run(engine, kit.add_captures(wf, pic="picture"))
    base = tiny_flux.pipeline()
    pipe = FluxKontextPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=base.text_encoder,
                               tokenizer=base.tokenizer, text_encoder_2=base.text_encoder_2,
                               tokenizer_2=base.tokenizer_2, transformer=base.transformer)
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))  # exact: 8-bit colour
        ref = pipe(image=picture, prompt=PROMPT, height=SIZE, width=SIZE,
                   num_inference_steps=STEPS, guidance_scale=3.5, latents=pack(noise), max_sequence_length=256,
                   _auto_resize=False, max_area=SIZE * SIZE, output_type="pt").images
    kit.assert_parity(cap["img"], kit.channels_last(ref), "Flux Kontext parity vs FluxKontextPipeline")


def test_fill_equals_flux_fill_pipeline(engine, tiny_flux, monkeypatch):
    """A Fill-shaped model through InpaintModelConditioning (noise_mask off) + KSampler equals FluxFillPipeline on
    the same image and mask ≤ 1/255 (the pipeline's VAE posterior sample pinned to the mean, as our VAEEncode)."""
    from diffusers import FluxFillPipeline, FluxTransformer2DModel
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image
    from safetensors.torch import save_file

    from nodegraph.diffusion.flow.convert import to_original

    torch.manual_seed(3)
    fill = FluxTransformer2DModel(**dict(tiny_flux.transformer.config, in_channels=384, out_channels=64)).eval()
    with torch.no_grad():
        for p in fill.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tiny_flux.home / "models" / "diffusion_models" / "flux1-fill-parity.safetensors"
    save_file({k: v.contiguous() for k, v in to_original(dict(fill.state_dict())).items()}, str(path))
    wf = graph("flux1-fill-parity.safetensors")
    wf["picture"] = kit.empty_image(SIZE, SIZE, 0xC06020)
    wf["blank"] = kit.node("SolidMask", value=0.0, width=SIZE, height=SIZE)
    wf["hole"] = kit.node("SolidMask", value=1.0, width=SIZE // 2, height=SIZE)
    wf["mask"] = kit.node("MaskComposite", destination=["blank", 0], source=["hole", 0], x=0, y=0, operation="add")
    wf["inpaint"] = kit.node("InpaintModelConditioning", positive=["guide", 0], negative=["neg", 0], vae=["vae", 0],
                         pixels=["picture", 0], mask=["mask", 0], noise_mask=False)
    wf["ks"]["inputs"].update(positive=["inpaint", 0], negative=["inpaint", 1], latent_image=["inpaint", 2])
    cap = kit.run(engine, kit.add_captures(wf, pic="picture", m="mask"))
    base = tiny_flux.pipeline()
    pipe = FluxFillPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=base.text_encoder,
                            tokenizer=base.tokenizer, text_encoder_2=base.text_encoder_2,
                            tokenizer_2=base.tokenizer_2, transformer=fill)
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    mask = Image.fromarray((cap["m"][0].numpy() * 255).round().astype("uint8"), mode="L")
    with torch.no_grad():
        ref = pipe(image=picture, mask_image=mask, prompt=PROMPT, height=SIZE, width=SIZE,
                   num_inference_steps=STEPS, guidance_scale=3.5, latents=pack(noise), max_sequence_length=256,
                   output_type="pt").images
    kit.assert_parity(cap["img"], kit.channels_last(ref), "Flux Fill parity vs FluxFillPipeline")
