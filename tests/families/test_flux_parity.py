"""Flux.1 through our nodes equals diffusers: weights loaded from each layout, and the image of the graph
UNETLoader + DualCLIPLoader + VAELoader + CLIPTextEncode(Flux) + FluxGuidance + EmptySD3LatentImage + KSampler
(euler/simple) + VAEDecode against FluxPipeline with the same noise, ≤ 1/255."""

from __future__ import annotations

import pytest
import torch
from flux_tiny import LAYOUTS

from nodegraph.diffusion.flow.latents import pack
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine, run_captured

PROMPT = "a photo of a red cat on the sky"
SEED, STEPS, SIZE = 7, 4, 64


@pytest.fixture(scope="module")
def engine(flux_config):
    return capture_engine(flux_config)


def graph(unet: str, encode: str = "CLIPTextEncode", guidance: float = 3.5, sampler: str = "euler",
          scheduler: str = "simple", weight_dtype: str = "default") -> dict:
    """The Flux text-to-image graph of ComfyUI's examples, image captured as "img", model as "model"."""
    text = ({"text": PROMPT} if encode == "CLIPTextEncode" else
            {"clip_l": PROMPT, "t5xxl": PROMPT, "guidance": guidance})
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": weight_dtype}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                             "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": encode, "inputs": dict(text, clip=["clip", 0])},
        "guide": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": guidance}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "msf": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["unet", 0], "max_shift": 1.15,
                                                              "base_shift": 0.5, "width": SIZE, "height": SIZE}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["msf", 0], "seed": SEED, "steps": STEPS, "cfg": 1.0, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["guide", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "model": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


@pytest.fixture(scope="module")
def reference(tiny_flux):
    """FluxPipeline's image [1, H, W, 3] with the noise our KSampler draws for SEED."""
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    pipe = tiny_flux.pipeline()
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=3.5,
                   latents=pack(noise), max_sequence_length=256, output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_the_same_weights(engine, tiny_flux, layout):
    model = _run(engine, {"unet": graph(LAYOUTS[layout])["unet"],
                          "model": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}})["model"]
    ours, ref = model.unet.state_dict(), tiny_flux.transformer.state_dict()
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    assert model.arch == "flux-dev" and model.family == "flux"


@pytest.mark.parametrize("encode", ["CLIPTextEncode", "CLIPTextEncodeFlux"])
def test_graph_image_equals_flux_pipeline(engine, reference, encode):
    image = _run(engine, graph(LAYOUTS["comfyui"], encode=encode))["img"]
    assert image.shape == reference.shape
    diff = float((image - reference).abs().max())
    print(f"Flux parity ({encode}): max |ours - FluxPipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_guidance_changes_the_image(engine, reference):
    image = _run(engine, graph(LAYOUTS["original"], guidance=8.0))["img"]
    assert float((image - reference).abs().max()) > 1 / 255


def test_custom_sampling_equals_ksampler(engine, tiny_flux, flux_config):
    """BasicScheduler + BasicGuider + euler through ``flow.custom`` equals KSampler on the same model and noise."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import BasicGuider, RandomNoise

    wf = graph(LAYOUTS["comfyui"])
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
    wf["cond"] = {"class_type": "Capture", "inputs": {"value": ["guide", 0]}}
    wf["shifted"] = {"class_type": "Capture", "inputs": {"value": ["msf", 0]}}
    wf["empty_lat"] = {"class_type": "Capture", "inputs": {"value": ["empty", 0]}}
    cap = _run(engine, wf)
    model = cap["shifted"].get() if hasattr(cap["shifted"], "get") else cap["shifted"]
    sigmas = custom.model_schedule(model, "simple", STEPS, 1.0)
    out, denoised = custom.sample_custom(BasicGuider(model, cap["cond"]), euler, sigmas, RandomNoise(SEED),
                                         cap["empty_lat"], DeviceManager(), model=model)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)
    assert denoised["samples"].shape == out["samples"].shape


def test_kontext_reference_equals_flux_kontext_pipeline(engine, tiny_flux):
    """EmptyImage → VAEEncode → ReferenceLatent on the positive equals FluxKontextPipeline(image=...) ≤ 1/255."""
    from diffusers import FluxKontextPipeline
    from PIL import Image

    wf = graph(LAYOUTS["comfyui"])
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": 0x3080D0}}
    wf["encoded"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["picture", 0], "vae": ["vae", 0]}}
    wf["ref"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["guide", 0], "latent": ["encoded", 0]}}
    wf["ks"]["inputs"]["positive"] = ["ref", 0]
    wf["pic"] = {"class_type": "Capture", "inputs": {"value": ["picture", 0]}}
    cap = _run(engine, wf)
    base = tiny_flux.pipeline()
    pipe = FluxKontextPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=base.text_encoder,
                               tokenizer=base.tokenizer, text_encoder_2=base.text_encoder_2,
                               tokenizer_2=base.tokenizer_2, transformer=base.transformer)
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))  # exact: 8-bit colour
        ref = pipe(image=picture, prompt=PROMPT, height=SIZE, width=SIZE,
                   num_inference_steps=STEPS, guidance_scale=3.5, latents=pack(noise), max_sequence_length=256,
                   _auto_resize=False, max_area=SIZE * SIZE, output_type="pt").images.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"Flux Kontext parity: max |ours - FluxKontextPipeline| = {diff:.2e}")
    assert diff <= 1 / 255


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
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": 0xC06020}}
    wf["blank"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}}
    wf["hole"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}}
    wf["mask"] = {"class_type": "MaskComposite", "inputs": {"destination": ["blank", 0], "source": ["hole", 0],
                                                            "x": 0, "y": 0, "operation": "add"}}
    wf["inpaint"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["guide", 0], "negative": ["neg", 0], "vae": ["vae", 0], "pixels": ["picture", 0],
        "mask": ["mask", 0], "noise_mask": False}}
    wf["ks"]["inputs"].update(positive=["inpaint", 0], negative=["inpaint", 1], latent_image=["inpaint", 2])
    wf["pic"] = {"class_type": "Capture", "inputs": {"value": ["picture", 0]}}
    wf["m"] = {"class_type": "Capture", "inputs": {"value": ["mask", 0]}}
    cap = _run(engine, wf)
    base = tiny_flux.pipeline()
    pipe = FluxFillPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=base.text_encoder,
                            tokenizer=base.tokenizer, text_encoder_2=base.text_encoder_2,
                            tokenizer_2=base.tokenizer_2, transformer=fill)
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    mask = Image.fromarray((cap["m"][0].numpy() * 255).round().astype("uint8"), mode="L")
    with torch.no_grad():
        ref = pipe(image=picture, mask_image=mask, prompt=PROMPT, height=SIZE, width=SIZE,
                   num_inference_steps=STEPS, guidance_scale=3.5, latents=pack(noise), max_sequence_length=256,
                   output_type="pt").images.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"Flux Fill parity: max |ours - FluxFillPipeline| = {diff:.2e}")
    assert diff <= 1 / 255
