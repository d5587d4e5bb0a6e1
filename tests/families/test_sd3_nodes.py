"""SD3 text encoders as ComfyUI combines them (any of CLIP-L, CLIP-G, T5 missing; CLIPTextEncodeSD3's empty_padding),
SkipLayerGuidanceSD3 against StableDiffusion3Pipeline's skip-layer guidance, and refusals that name the fix."""

from __future__ import annotations

import family_kit as kit
import numpy as np
import pytest
import torch
from sd3_tiny import LAYOUTS, build
from test_sd3_parity import CFG, PROMPT, SEED, SIZE, STEPS, graph

tiny_sd3 = kit.tiny_fixture(build, "tiny-sd3-nodes")
engine = kit.engine_fixture("tiny_sd3")


def _encode(engine, loader: dict, **text) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = dict({"clip_l": PROMPT, "clip_g": PROMPT, "t5xxl": PROMPT, "empty_padding": "none"}, **text)
    wf = {"clip": loader, "enc": kit.node("CLIPTextEncodeSD3", **inputs, clip=["clip", 0]), "c": kit.capture("enc")}
    (states, extras), = kit.run(engine, wf)["c"]
    return states, extras["pooled_output"]


def test_missing_encoders_are_zeros_as_in_comfyui(engine):
    full, full_pooled = _encode(engine, kit.node("TripleCLIPLoader", clip_name1="t5xxl_fp16.safetensors",
                                             clip_name2="clip_g.safetensors", clip_name3="clip_l.safetensors"))
    assert full.shape == (1, 154, 96) and full_pooled.shape == (1, 80)  # any order of files
    lg, lg_pooled = _encode(engine, kit.node("DualCLIPLoader", clip_name1="clip_g.safetensors",
                                         clip_name2="clip_l.safetensors", type="sd3"))
    assert lg.shape == (1, 77, 4096) and torch.equal(lg[..., :80], full[:, :77, :80]) and not lg[..., 80:].any()
    assert torch.equal(lg_pooled, full_pooled)
    t5, t5_pooled = _encode(engine, kit.node("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="sd3"))
    assert torch.equal(t5, full[:, 77:]) and t5_pooled.shape == (1, 2048) and not t5_pooled.any()
    # one CLIP file alone is CLIP-G only at bigG's width (1280); the tiny ones are read as CLIP-L
    lone, lone_pooled = _encode(engine, kit.node("CLIPLoader", clip_name="clip_l.safetensors", type="sd3"))
    assert lone.shape == (1, 77, 4096) and torch.equal(lone[..., :32], full[:, :77, :32]) and not lone[..., 32:].any()
    assert torch.equal(lone_pooled[:, :32], full_pooled[:, :32]) and lone_pooled.shape == (1, 32 + 1280)


def test_empty_padding_none_leaves_empty_prompts_out(engine):
    loader = kit.node("TripleCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors",
                  clip_name3="t5xxl_fp16.safetensors")
    no_t5, _ = _encode(engine, loader, t5xxl="")
    assert no_t5.shape == (1, 77, 96)
    only_t5, pooled = _encode(engine, loader, clip_l="", clip_g="")
    assert only_t5.shape == (1, 77, 96) and not pooled.any()
    padded, _ = _encode(engine, loader, t5xxl="", empty_padding="empty_prompt")
    assert padded.shape == (1, 154, 96)


def test_skip_layer_guidance_equals_pipeline(engine, tiny_sd3):
    wf = graph()
    wf["slg"] = kit.node("SkipLayerGuidanceSD3", model=["msd3", 0], layers="1", scale=2.8, start_percent=0.0,
                     end_percent=1.0)
    wf["ks"]["inputs"]["model"] = ["slg", 0]
    cap = kit.run(engine, wf)
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():  # the pipeline skips step 0 unless start < 0 (it compares i > steps · start)
        ref = tiny_sd3.pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                                  sigmas=list(np.linspace(1.0, 1.0 / STEPS, STEPS)), latents=noise,
                                  max_sequence_length=77, output_type="pt", skip_guidance_layers=[1],
                                  skip_layer_guidance_scale=2.8, skip_layer_guidance_start=-0.01,
                                  skip_layer_guidance_stop=1.0).images
    kit.assert_parity(cap["img"], kit.channels_last(ref),
                      "SD3.5 skip-layer guidance parity vs StableDiffusion3Pipeline")
    without = kit.run(engine, graph())
    assert kit.max_diff(without["img"], cap["img"]) > 1 / 255  # the guidance does change the image


def test_refusals_name_the_fix(engine, tiny_sd3, tmp_path):
    from nodegraph.diffusion.flow.sd3_text import encode_sd3
    from nodegraph.diffusion.types import TextEncoder

    with pytest.raises(ValueError, match="TripleCLIPLoader"):
        encode_sd3(TextEncoder((None,) * 3, (None,) * 3, arch="sd3"), "a", "a", "a", "cpu")
    wf = {"clip": kit.node("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2="clip_l.safetensors",
                       type="sd3"),
          "c": kit.capture("clip")}
    assert "two clip_l" in kit.run_error(engine, wf)
    wf = graph(LAYOUTS["comfyui"])
    wf["msd3"] = kit.node("SkipLayerGuidanceSD3", model=["unet", 0], layers="7, x", scale=3.0, start_percent=0.01,
                      end_percent=0.15)
    assert "block numbers" in kit.run_error(engine, wf)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler + BasicGuider + euler through ``flow.custom`` equals KSampler on an SD3 model and the same noise
    (CFGGuider's cfg through the same denoiser)."""
    from nodegraph.diffusion.guiders import CFGGuider

    cap = kit.run(engine, kit.add_captures(graph(), lat="ks", p="pos", n="neg", shifted="msd3", empty_lat="empty"))
    model = kit.unwrap(cap["shifted"])
    out, _ = kit.custom_sample(model, CFGGuider(model, cap["p"], cap["n"], CFG), cap["empty_lat"], STEPS, SEED)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_dual_cfg_guider_on_a_flow_model(engine):
    """DualCFGGuider through ``flow.custom``: with cond2 = negative, the regular style is CFG at cfg_conds and the
    nested style CFG at cfg_conds · cfg_cond2_negative (ComfyUI's formulas on x0), on an SD3 model."""
    from nodegraph.diffusion.guiders import CFGGuider, DualCFGGuider

    cap = kit.run(engine, kit.add_captures(graph(), p="pos", n="neg", shifted="msd3", empty_lat="empty"))
    model = kit.unwrap(cap["shifted"])

    def sample(guider):
        return kit.custom_sample(model, guider, cap["empty_lat"], STEPS, SEED)[0]["samples"]

    p, n = cap["p"], cap["n"]
    regular = sample(DualCFGGuider(model, p, n, n, 3.0, 2.0, False))
    assert torch.allclose(regular, sample(CFGGuider(model, p, n, 3.0)), atol=1e-4)
    nested = sample(DualCFGGuider(model, p, n, n, 3.0, 2.0, True))
    assert torch.allclose(nested, sample(CFGGuider(model, p, n, 6.0)), atol=1e-4)
    assert float((nested - regular).abs().max()) > 1e-3
