"""InstructPixToPixConditioning on Flux Canny/Depth control models (128 input channels: the packed latent and the
packed control-image latent): our graph equals diffusers' FluxControlPipeline ≤ 1/255."""

from __future__ import annotations

import pytest
import torch
from test_flux_parity import PROMPT, SEED, SIZE, STEPS, _run, graph

from nodegraph.diffusion.flow.latents import pack
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine


@pytest.fixture(scope="module")
def engine(flux_config):
    return capture_engine(flux_config)


@pytest.fixture(scope="module")
def control_model(tiny_flux):
    """A Canny/Depth-shaped tiny Flux (x_embedder takes 128 channels) saved in the original layout."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from nodegraph.diffusion.flow.convert import to_original

    torch.manual_seed(5)
    model = FluxTransformer2DModel(**dict(tiny_flux.transformer.config, in_channels=128, out_channels=64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tiny_flux.home / "models" / "diffusion_models" / "flux1-canny-parity.safetensors"
    save_file({k: v.contiguous() for k, v in to_original(dict(model.state_dict())).items()}, str(path))
    return model


def _ip2p_graph(color: int) -> dict:
    wf = graph("flux1-canny-parity.safetensors")
    wf["picture"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": color}}
    wf["ip2p"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
        "positive": ["guide", 0], "negative": ["neg", 0], "vae": ["vae", 0], "pixels": ["picture", 0]}}
    wf["ks"]["inputs"].update(positive=["ip2p", 0], negative=["ip2p", 1], latent_image=["ip2p", 2])
    wf["pic"] = {"class_type": "Capture", "inputs": {"value": ["picture", 0]}}
    wf["cond"] = {"class_type": "Capture", "inputs": {"value": ["ip2p", 1]}}
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["ip2p", 2]}}
    return wf


def test_ip2p_outputs(engine, control_model):
    """Both conditionings carry the image latent; the latent output is zeros of its shape (ComfyUI's)."""
    wf = _ip2p_graph(0x40A0E0)
    wf["picture"]["inputs"].update(width=SIZE + 5, height=SIZE + 3)  # cropped to multiples of 8, as ComfyUI
    cap = _run(engine, wf)
    concat = cap["cond"][0][1]["concat_latent_image"]
    assert tuple(concat.shape) == (1, 16, SIZE // 8, SIZE // 8)
    assert float(concat.abs().max()) > 0
    assert tuple(cap["lat"]["samples"].shape) == tuple(concat.shape) and not bool(cap["lat"]["samples"].any())


def test_flux_control_equals_flux_control_pipeline(engine, tiny_flux, control_model, monkeypatch):
    """A control image through InstructPixToPixConditioning + KSampler equals FluxControlPipeline(control_image)
    (its VAE posterior sample pinned to the mean, as our VAEEncode); another control image changes ours."""
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image

    cap = _run(engine, _ip2p_graph(0xC06020))
    base = tiny_flux.pipeline()
    pipe = FluxControlPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=base.text_encoder,
                               tokenizer=base.tokenizer, text_encoder_2=base.text_encoder_2,
                               tokenizer_2=base.tokenizer_2, transformer=control_model)
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    with torch.no_grad():
        ref = pipe(prompt=PROMPT, control_image=picture, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                   guidance_scale=3.5, latents=pack(noise), max_sequence_length=256,
                   output_type="pt").images.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"Flux control parity: max |ours - FluxControlPipeline| = {diff:.2e}")
    assert diff <= 1 / 255
    other = _run(engine, _ip2p_graph(0x2080F0))
    assert float((other["img"] - cap["img"]).abs().max()) > 1e-3
