"""GLIGEN (GLIGENLoader, GLIGENTextBoxApply) on the tiny SD model: the boxes reach the gated layers, which are on the
UNet only for the calls of the entries that have boxes, and parity with diffusers' StableDiffusionGLIGENPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from graphs import make_engine, run
from safetensors.torch import save_file

from nodegraph.diffusion import gligen
from nodegraph.diffusion.gligen import transformer_blocks

PIXEL = 1.0 / 255.0
W, H = 64, 48
BOX = {"width": 32, "height": 24, "x": 16, "y": 8}  # pixels; the tiny model's latent cell is 2 pixels


@pytest.fixture(scope="module")
def gated(tiny_sd):
    """A gated (GLIGEN) copy of the tiny UNet with random gated layers, and its GLIGEN file in models/gligen."""
    unet = tiny_sd.components["unet"]
    torch.manual_seed(5)
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    gated = UNet2DConditionModel.from_config({**config, "attention_type": "gated"})
    missing, unexpected = gated.load_state_dict(unet.state_dict(), strict=False)
    assert not unexpected and all(".fuser." in k or k.startswith("position_net.") for k in missing)
    state = {}
    for i, block in enumerate(transformer_blocks(gated)):
        with torch.no_grad():
            block.fuser.alpha_attn.fill_(0.8)
            block.fuser.alpha_dense.fill_(0.6)
        for k, v in block.fuser.state_dict().items():
            state[f"model.diffusion_model.input_blocks.{i}.1.transformer_blocks.0.fuser.{k}"] = v.contiguous()
    with torch.no_grad():
        for p in gated.position_net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state.update({f"position_net.{k}": v.contiguous() for k, v in gated.position_net.state_dict().items()})
    folder = tiny_sd.models_dir / "gligen"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "tiny-gligen.safetensors"))
    return gated.eval()


def _graph(boxes: int = 1, cfg: float = 1.0) -> dict:
    wf = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": W, "height": H, "batch_size": 1}},
        "gl": {"class_type": "GLIGENLoader", "inputs": {"gligen_name": "tiny-gligen.safetensors"}},
    }
    pos = ["pos", 0]
    for i in range(boxes):
        wf[f"box{i}"] = {"class_type": "GLIGENTextBoxApply", "inputs": {
            "conditioning_to": pos, "clip": ["ckpt", 1], "gligen_textbox_model": ["gl", 0], "text": "a dog", **BOX}}
        pos = [f"box{i}", 0]
    wf["ks"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": 7, "steps": 4, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal",
        "positive": pos, "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}}
    wf["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    wf["img"] = {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}
    wf["cond"] = {"class_type": "Capture", "inputs": {"value": pos}}
    return wf


def _run(tiny_sd, wf):
    result, cap = run(make_engine(tiny_sd.config), wf)
    result.raise_for_status()
    return cap


def test_boxes_reach_the_gated_layers_of_the_entries_that_have_them(tiny_sd, gated, monkeypatch):
    seen = []
    real = gligen.call

    def spy(unet, entries, x, t, **kw):
        blocks = transformer_blocks(unet)
        out = real(unet, entries, x, t, **kw)
        seen.append(([e.gligen is not None for e in entries], kw.get("encoder_hidden_states").shape[0]))
        assert not any(hasattr(b, "fuser") for b in blocks)  # removed after every call
        return out

    calls = []
    position_forward = type(gated.position_net).forward

    def record(self, boxes, masks, positive_embeddings, **kw):
        calls.append((boxes.detach().clone(), masks.detach().clone()))
        return position_forward(self, boxes, masks, positive_embeddings, **kw)

    monkeypatch.setattr("nodegraph.diffusion.sampling.unet_call", spy)
    monkeypatch.setattr(type(gated.position_net), "forward", record)
    cap = _run(tiny_sd, _graph(boxes=2, cfg=3.0))
    boxes = cap["cond"][0][1]["gligen"][2]
    assert len(boxes) == 2 and boxes[0].pooled.shape == (1, 32)
    # every step: the negative without boxes and the positive with them, never batched together
    assert seen and all(flags in ([False], [True]) for flags, _ in seen)
    assert sum(flags == [True] for flags, _ in seen) == len(calls) == 4
    got_boxes, masks = calls[0]
    want = torch.tensor([8 / 32, 4 / 24, 24 / 32, 16 / 24])  # ComfyUI: latent cells over the latent's size
    assert torch.allclose(got_boxes[0, 0], want) and torch.allclose(got_boxes[0, 1], want)
    assert masks[0, :3].tolist() == [1.0, 1.0, 0.0] and got_boxes.shape == (1, 30, 4)


def test_gligen_matches_diffusers_pipeline(tiny_sd, gated):
    import diffusers

    ours = _run(tiny_sd, _graph())["img"].numpy()
    plain = _run(tiny_sd, {k: v for k, v in _graph(boxes=0).items() if k != "gl"})["img"].numpy()
    pipe = diffusers.StableDiffusionGLIGENPipeline.from_pretrained(
        str(tiny_sd.folder), unet=gated, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red circle", height=H, width=W, num_inference_steps=4, guidance_scale=1.0,
               gligen_phrases=["a dog"], gligen_boxes=[[8 / 32, 4 / 24, 24 / 32, 16 / 24]],
               gligen_scheduled_sampling_beta=1.0, generator=torch.Generator("cpu").manual_seed(7),
               output_type="np").images
    assert ours.shape == ref.shape == (1, H, W, 3)
    assert np.abs(ours - plain).max() > 0.02  # the box changes the image …
    print(f"GLIGEN vs StableDiffusionGLIGENPipeline: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL  # … as diffusers' pipeline does


def test_gligen_loader_refuses_other_files(tiny_sd):
    with pytest.raises(ValueError, match="not a GLIGEN model"):
        gligen.load_gligen({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "x.safetensors")
