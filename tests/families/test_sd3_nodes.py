"""SD3 text encoders as ComfyUI combines them (any of CLIP-L, CLIP-G, T5 missing; CLIPTextEncodeSD3's empty_padding),
SkipLayerGuidanceSD3 against StableDiffusion3Pipeline's skip-layer guidance, and refusals that name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sd3_tiny import LAYOUTS, build
from test_sd3_parity import CFG, PROMPT, SEED, SIZE, STEPS, graph

from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.testing_graphs import capture_engine, run_captured


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-sd3-nodes"))


@pytest.fixture(scope="module")
def engine(tiny_sd3):
    cfg = EngineConfig(home=tiny_sd3.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def _encode(engine, loader: dict, **text) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = dict({"clip_l": PROMPT, "clip_g": PROMPT, "t5xxl": PROMPT, "empty_padding": "none"}, **text)
    wf = {"clip": loader, "enc": {"class_type": "CLIPTextEncodeSD3", "inputs": dict(inputs, clip=["clip", 0])},
          "c": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    (states, extras), = cap["c"]
    return states, extras["pooled_output"]


def test_missing_encoders_are_zeros_as_in_comfyui(engine):
    full, full_pooled = _encode(engine, {"class_type": "TripleCLIPLoader", "inputs": {
        "clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_g.safetensors",
        "clip_name3": "clip_l.safetensors"}})
    assert full.shape == (1, 154, 96) and full_pooled.shape == (1, 80)  # any order of files
    lg, lg_pooled = _encode(engine, {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors", "type": "sd3"}})
    assert lg.shape == (1, 77, 4096) and torch.equal(lg[..., :80], full[:, :77, :80]) and not lg[..., 80:].any()
    assert torch.equal(lg_pooled, full_pooled)
    t5, t5_pooled = _encode(engine, {"class_type": "CLIPLoader", "inputs": {
        "clip_name": "t5xxl_fp16.safetensors", "type": "sd3"}})
    assert torch.equal(t5, full[:, 77:]) and t5_pooled.shape == (1, 2048) and not t5_pooled.any()
    # one CLIP file alone is CLIP-G only at bigG's width (1280); the tiny ones are read as CLIP-L
    lone, lone_pooled = _encode(engine, {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors",
                                                                                "type": "sd3"}})
    assert lone.shape == (1, 77, 4096) and torch.equal(lone[..., :32], full[:, :77, :32]) and not lone[..., 32:].any()
    assert torch.equal(lone_pooled[:, :32], full_pooled[:, :32]) and lone_pooled.shape == (1, 32 + 1280)


def test_empty_padding_none_leaves_empty_prompts_out(engine):
    loader = {"class_type": "TripleCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "t5xxl_fp16.safetensors"}}
    no_t5, _ = _encode(engine, loader, t5xxl="")
    assert no_t5.shape == (1, 77, 96)
    only_t5, pooled = _encode(engine, loader, clip_l="", clip_g="")
    assert only_t5.shape == (1, 77, 96) and not pooled.any()
    padded, _ = _encode(engine, loader, t5xxl="", empty_padding="empty_prompt")
    assert padded.shape == (1, 154, 96)


def test_skip_layer_guidance_equals_pipeline(engine, tiny_sd3):
    wf = graph()
    wf["slg"] = {"class_type": "SkipLayerGuidanceSD3", "inputs": {"model": ["msd3", 0], "layers": "1", "scale": 2.8,
                                                                 "start_percent": 0.0, "end_percent": 1.0}}
    wf["ks"]["inputs"]["model"] = ["slg", 0]
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():  # the pipeline skips step 0 unless start < 0 (it compares i > steps · start)
        ref = tiny_sd3.pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                                  sigmas=list(np.linspace(1.0, 1.0 / STEPS, STEPS)), latents=noise,
                                  max_sequence_length=77, output_type="pt", skip_guidance_layers=[1],
                                  skip_layer_guidance_scale=2.8, skip_layer_guidance_start=-0.01,
                                  skip_layer_guidance_stop=1.0).images.permute(0, 2, 3, 1).float()
    diff = float((cap["img"] - ref).abs().max())
    print(f"SD3.5 skip-layer guidance parity: max |ours - StableDiffusion3Pipeline| = {diff:.2e}")
    assert diff <= 1 / 255
    _, without = run_captured(engine, graph())
    assert float((without["img"] - cap["img"]).abs().max()) > 1 / 255  # the guidance does change the image


def test_refusals_name_the_fix(engine, tiny_sd3, tmp_path):
    from nodegraph.diffusion.flow.sd3_text import encode_sd3
    from nodegraph.diffusion.types import TextEncoder

    with pytest.raises(ValueError, match="TripleCLIPLoader"):
        encode_sd3(TextEncoder((None,) * 3, (None,) * 3, arch="sd3"), "a", "a", "a", "cpu")
    wf = {"clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                              "clip_name2": "clip_l.safetensors", "type": "sd3"}},
          "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    result, _ = run_captured(engine, wf)
    assert "two clip_l" in str(result.error)
    wf = graph(LAYOUTS["comfyui"])
    wf["msd3"] = {"class_type": "SkipLayerGuidanceSD3", "inputs": {"model": ["unet", 0], "layers": "7, x",
                                                                  "scale": 3.0, "start_percent": 0.01,
                                                                  "end_percent": 0.15}}
    result, _ = run_captured(engine, wf)
    assert "block numbers" in str(result.error)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler + BasicGuider + euler through ``flow.custom`` equals KSampler on an SD3 model and the same noise
    (CFGGuider's cfg through the same denoiser)."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import CFGGuider, RandomNoise

    wf = graph()
    for name, src in (("lat", "ks"), ("p", "pos"), ("n", "neg"), ("shifted", "msd3"), ("empty_lat", "empty")):
        wf[name] = {"class_type": "Capture", "inputs": {"value": [src, 0]}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    model = cap["shifted"].get() if hasattr(cap["shifted"], "get") else cap["shifted"]
    sigmas = custom.model_schedule(model, "simple", STEPS, 1.0)
    out, _ = custom.sample_custom(CFGGuider(model, cap["p"], cap["n"], CFG), euler, sigmas, RandomNoise(SEED),
                                  cap["empty_lat"], DeviceManager(), model=model)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_dual_cfg_guider_on_a_flow_model(engine):
    """DualCFGGuider through ``flow.custom``: with cond2 = negative, the regular style is CFG at cfg_conds and the
    nested style CFG at cfg_conds · cfg_cond2_negative (ComfyUI's formulas on x0), on an SD3 model."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import CFGGuider, DualCFGGuider, RandomNoise

    wf = graph()
    for name, src in (("p", "pos"), ("n", "neg"), ("shifted", "msd3"), ("empty_lat", "empty")):
        wf[name] = {"class_type": "Capture", "inputs": {"value": [src, 0]}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    model = cap["shifted"].get() if hasattr(cap["shifted"], "get") else cap["shifted"]
    sigmas = custom.model_schedule(model, "simple", STEPS, 1.0)

    def run(guider):
        return custom.sample_custom(guider, euler, sigmas, RandomNoise(SEED), cap["empty_lat"], DeviceManager(),
                                    model=model)[0]["samples"]

    p, n = cap["p"], cap["n"]
    regular = run(DualCFGGuider(model, p, n, n, 3.0, 2.0, False))
    assert torch.allclose(regular, run(CFGGuider(model, p, n, 3.0)), atol=1e-4)
    nested = run(DualCFGGuider(model, p, n, n, 3.0, 2.0, True))
    assert torch.allclose(nested, run(CFGGuider(model, p, n, 6.0)), atol=1e-4)
    assert float((nested - regular).abs().max()) > 1e-3
