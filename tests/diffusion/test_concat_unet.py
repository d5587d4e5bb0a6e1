"""UNets wider than their latents (InstructPix2Pix: 8 channels; inpainting: 9) get their extra input channels from
the conditioning (``concat_latent_image``/``concat_mask``), as ComfyUI's ``concat_cond``; checked by hand against one
two Euler steps of the UNet on the concatenated input."""

from __future__ import annotations

import pytest
import torch
from graphs import make_engine, run

from nodegraph._tiny import UNET_CONFIG
from nodegraph.api import Int, Link, Node, Output
from nodegraph.diffusion.noise import make_noise


def _wide_unet(channels: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(channels)
    return UNet2DConditionModel(**dict(UNET_CONFIG, in_channels=channels)).eval()


WIDE: dict[int, object] = {}


class WidenUNet(Node):
    """Test node: the model with a random-weight UNet of ``channels`` input channels."""

    INPUTS = {"model": Link("MODEL"), "channels": Int(8, min=4, max=16)}  # noqa: RUF012
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, channels):
        return (model.derive(unet=WIDE.setdefault(channels, _wide_unet(channels))),)


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config, (WidenUNet,))


def _graph(channels: int, condition: str) -> dict:
    pixels = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0xC04020}}
    wf = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "wide": {"class_type": "WidenUNet", "inputs": {"model": ["ckpt", 0], "channels": channels}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
        "img": pixels,
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["wide", 0], "seed": 7, "steps": 2, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["cond", 2],
            "denoise": 1.0}},
        "lat": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
        "c": {"class_type": "Capture", "inputs": {"value": ["cond", 0]}},
        "start": {"class_type": "Capture", "inputs": {"value": ["cond", 2]}},
    }
    if condition == "ip2p":
        wf["cond"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["img", 0]}}
    else:
        wf["mask"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
        wf["cond"] = {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["img", 0],
            "mask": ["mask", 0], "noise_mask": False}}
    return wf


def _euler(tiny_sd, unet, emb, extra: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """KSampler euler/normal, 2 steps, cfg 1, from the unscaled latent ``start``, by hand: each step
    x0 = x - sigma * eps(cat[x c_in, extra]) and x += (x - x0) / sigma * (sigma_next - sigma)."""
    from nodegraph.diffusion.schedulers import build_scheduler

    sched = build_scheduler("euler", "normal", dict(tiny_sd.components["scheduler"].config), 2)
    sigmas = [float(s) for s in sched.sigmas]
    x = start * 0.18215 + make_noise(start.shape, torch.Generator().manual_seed(7)) * sigmas[0]
    for t, sigma, nxt in zip(sched.timesteps, sigmas, sigmas[1:]):
        with torch.no_grad():
            inp = torch.cat([x / (sigma ** 2 + 1) ** 0.5, extra], dim=1)
            eps = unet(inp, t, encoder_hidden_states=emb).sample
        x = x + eps * (nxt - sigma)
    return x / 0.18215


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_ip2p_unet_takes_the_image_latent_unscaled(engine, tiny_sd):
    result, cap = run(engine, _graph(8, "ip2p"))
    result.raise_for_status()
    (emb, extras), = cap["c"]
    image = extras["concat_latent_image"]
    assert image.shape[:2] == (1, 4) and image.abs().max() > 0
    ref = _euler(tiny_sd, WIDE[8], emb, image, torch.zeros_like(image))  # ComfyUI's SD15 IP2P: unscaled
    assert _close(cap["lat"]["samples"], ref) < 1e-4
    wrong = _euler(tiny_sd, WIDE[8], emb, image * 0.18215, torch.zeros_like(image))
    assert _close(cap["lat"]["samples"], wrong) > 1e-3


def test_inpaint_unet_takes_mask_and_scaled_masked_latent(engine, tiny_sd):
    result, cap = run(engine, _graph(9, "inpaint"))
    result.raise_for_status()
    (emb, extras), = cap["c"]
    mask = torch.ones(1, 1, *extras["concat_latent_image"].shape[-2:])
    extra = torch.cat([mask, extras["concat_latent_image"] * 0.18215], dim=1)
    ref = _euler(tiny_sd, WIDE[9], emb, extra, cap["start"]["samples"])
    assert _close(cap["lat"]["samples"], ref) < 1e-4
    unscaled = torch.cat([mask, extras["concat_latent_image"]], dim=1)
    assert _close(cap["lat"]["samples"], _euler(tiny_sd, WIDE[9], emb, unscaled, cap["start"]["samples"])) > 1e-3


def test_inpaint_unet_without_its_conditioning_is_a_clear_error(engine):
    wf = _graph(9, "ip2p")
    result, _ = run(engine, wf)
    with pytest.raises(Exception, match="InpaintModelConditioning"):
        result.raise_for_status()


def test_k_path_sampler_gets_the_image_channels_too(engine, tiny_sd):
    wf = _graph(8, "ip2p")
    wf["ks"]["inputs"]["sampler_name"] = "euler_cfg_pp"  # a k-diffusion-convention sampler; at cfg 1 it is euler
    result, cap = run(engine, wf)
    result.raise_for_status()
    (emb, extras), = cap["c"]
    image = extras["concat_latent_image"]
    ref = _euler(tiny_sd, WIDE[8], emb, image, torch.zeros_like(image))
    assert _close(cap["lat"]["samples"], ref) < 1e-4
