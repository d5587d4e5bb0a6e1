"""Sampling through the real Engine on the tiny model: parity with diffusers' pipelines, img2img, inpainting,
KSamplerAdvanced ranges, batches, conditioning, progress and interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphs import make_engine, run, txt2img

from nodegraph.context import InterruptFlag
from nodegraph.events import EventBus, NodeProgress

PIXEL = 1.0 / 255.0
SF = 0.18215


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _pipe(tiny_sd, cls_name: str = "StableDiffusionPipeline"):
    import diffusers

    p = getattr(diffusers, cls_name).from_pretrained(str(tiny_sd.folder), safety_checker=None,
                                                     requires_safety_checker=False)
    p.scheduler = diffusers.EulerDiscreteScheduler.from_config(p.scheduler.config, timestep_spacing="linspace")
    p.set_progress_bar_config(disable=True)
    return p


def _ok(engine, wf, **kw):
    result, cap = run(engine, wf, **kw)
    result.raise_for_status()
    return result, cap


@pytest.fixture(scope="module")
def mask_png(tiny_sd):
    """input/left-half.png: white (repaint) on the left half, black on the right."""
    from PIL import Image

    arr = np.zeros((64, 64), dtype=np.uint8)
    arr[:, :32] = 255
    tiny_sd.config.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(tiny_sd.config.input_dir / "left-half.png")
    return "left-half.png"


def _from_shape(wf: dict, shape: str = "square", mask: str | None = None) -> dict:
    """Feed KSampler with ShapeImage → VAEEncode (→ SetLatentNoiseMask with the mask image ``mask``)."""
    wf = dict(wf)
    del wf["empty"]
    wf["shape"] = {"class_type": "ShapeImage", "inputs": {"shape": shape, "color": "red", "background": "blue",
                                                         "size": 64, "center_x": 0.5, "center_y": 0.5,
                                                         "radius": 0.25}}
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["shape", 0], "vae": ["ckpt", 2]}}
    src = ["enc", 0]
    if mask:
        wf["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}}
        wf["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": src, "mask": ["mask", 0]}}
        src = ["masked", 0]
    wf["init"] = {"class_type": "Capture", "inputs": {"value": src}}
    wf["ks"] = {**wf["ks"], "inputs": {**wf["ks"]["inputs"], "latent_image": src}}
    return wf


def test_txt2img_matches_diffusers_pipeline(engine, tiny_sd):
    _, cap = _ok(engine, txt2img(positive="a red circle on a blue background", negative="green", seed=1234,
                                 steps=6, cfg=7.5, width=64, height=48))
    ref = _pipe(tiny_sd)("a red circle on a blue background", negative_prompt="green", height=48, width=64,
                         num_inference_steps=6, guidance_scale=7.5,
                         generator=torch.Generator("cpu").manual_seed(1234), output_type="np").images
    ours = cap["img"].numpy()
    assert ours.shape == ref.shape == (1, 48, 64, 3)
    assert ours.std() > 0.01  # a real image, not a constant
    assert np.abs(ours - ref).max() <= PIXEL


def test_batch_matches_pipeline_and_images_differ(engine, tiny_sd):
    _, cap = _ok(engine, txt2img(seed=7, steps=3, batch=2))
    ref = _pipe(tiny_sd)("a red circle", negative_prompt="blue", height=64, width=64, num_inference_steps=3,
                         guidance_scale=7.5, num_images_per_prompt=2,
                         generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    ours = cap["img"].numpy()
    assert ours.shape == (2, 64, 64, 3)
    assert np.abs(ours - ref).max() <= PIXEL
    assert np.abs(ours[0] - ours[1]).max() > 0.05


def test_seed_decides_the_image(engine):
    a = _ok(engine, txt2img(seed=1, steps=2))[1]["lat"]["samples"]
    b = _ok(engine, txt2img(seed=1, steps=2))[1]["lat"]["samples"]
    c = _ok(engine, txt2img(seed=2, steps=2))[1]["lat"]["samples"]
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_img2img_matches_diffusers_strength(engine, tiny_sd):
    """KSampler(steps, denoise) runs the last ``steps`` steps of an int(steps / denoise)-step schedule, which is
    diffusers' img2img with num_inference_steps=int(steps / denoise) and strength=denoise."""
    _, cap = _ok(engine, _from_shape(txt2img(seed=11, steps=3, denoise=0.5)))
    init = cap["init"]["samples"]
    ref = _pipe(tiny_sd, "StableDiffusionImg2ImgPipeline")(
        "a red circle", image=init * SF, strength=0.5, num_inference_steps=6, guidance_scale=7.5,
        negative_prompt="blue", generator=torch.Generator("cpu").manual_seed(11), output_type="latent").images
    assert torch.allclose(cap["lat"]["samples"] * SF, ref, atol=1e-4)


def test_denoise_controls_how_much_changes(engine):
    distance = {}
    for denoise in (0.0, 0.3, 1.0):
        _, cap = _ok(engine, _from_shape(txt2img(seed=3, steps=4, denoise=denoise)))
        distance[denoise] = float((cap["lat"]["samples"] - cap["init"]["samples"]).abs().mean())
    assert distance[0.0] == 0.0  # denoise 0 returns the input
    assert 0.0 < distance[0.3] < distance[1.0]


def test_noise_mask_changes_only_the_masked_area(engine, mask_png):
    _, cap = _ok(engine, _from_shape(txt2img(seed=5, steps=3), mask=mask_png))
    before, after = cap["init"]["samples"], cap["lat"]["samples"]
    mask = F.interpolate(cap["init"]["noise_mask"], size=before.shape[-2:], mode="bilinear", align_corners=False)
    keep = (mask == 0).expand_as(before)
    half = before.shape[-1] // 2
    assert keep[..., :, half:].all() and not keep[..., :, :half].any()
    assert torch.allclose(after[keep], before[keep], atol=1e-5)
    assert (after[~keep] - before[~keep]).abs().mean() > 0.1


def test_vae_encode_for_inpaint_then_sample(engine):
    wf = _from_shape(txt2img(seed=5, steps=2))
    wf["enc"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["shape", 0], "vae": ["ckpt", 2],
                                                                 "mask": ["shape", 1], "grow_mask_by": 6}}
    wf["m"] = {"class_type": "Capture", "inputs": {"value": ["shape", 1]}}
    _, cap = _ok(engine, wf)
    noise_mask = cap["init"]["noise_mask"]
    assert noise_mask.shape == (1, 1, 64, 64)
    assert noise_mask.sum() > cap["m"].sum()  # grown
    assert set(noise_mask.unique().tolist()) <= {0.0, 1.0}
    before, after = cap["init"]["samples"], cap["lat"]["samples"]
    cells = F.interpolate(noise_mask, size=before.shape[-2:], mode="bilinear", align_corners=False)
    keep = (cells == 0).expand_as(before)
    assert torch.allclose(after[keep], before[keep], atol=1e-5)


def _advanced(src, *, add_noise="enable", start=0, end=10000, leftover="disable", steps=4, sampler="euler",
              scheduler="normal"):
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["ckpt", 0], "add_noise": add_noise, "noise_seed": 9, "steps": steps, "cfg": 5.0,
        "sampler_name": sampler, "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0],
        "latent_image": src, "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover}}


def _two_stage(sampler: str, scheduler: str) -> dict:
    wf = txt2img()
    for k in ("ks", "dec", "img", "lat"):
        del wf[k]
    wf.update({
        "whole": _advanced(["empty", 0], sampler=sampler, scheduler=scheduler),
        "first": _advanced(["empty", 0], end=2, leftover="enable", sampler=sampler, scheduler=scheduler),
        "second": _advanced(["first", 0], add_noise="disable", start=2, sampler=sampler, scheduler=scheduler),
        "early": _advanced(["empty", 0], end=1, sampler=sampler, scheduler=scheduler),
        "none": _advanced(["empty", 0], start=4, sampler=sampler, scheduler=scheduler),
        "c_whole": {"class_type": "Capture", "inputs": {"value": ["whole", 0]}},
        "c_first": {"class_type": "Capture", "inputs": {"value": ["first", 0]}},
        "c_second": {"class_type": "Capture", "inputs": {"value": ["second", 0]}},
        "c_early": {"class_type": "Capture", "inputs": {"value": ["early", 0]}},
        "c_none": {"class_type": "Capture", "inputs": {"value": ["none", 0]}},
    })
    return wf


def test_advanced_two_stages_equal_one_run(engine, tiny_sd):
    wf = _two_stage("euler", "normal")
    wf["early_left"] = _advanced(["empty", 0], end=1, leftover="enable")
    wf["c_early_left"] = {"class_type": "Capture", "inputs": {"value": ["early_left", 0]}}
    _, cap = _ok(engine, wf)
    whole, first, second = (cap[k]["samples"] for k in ("c_whole", "c_first", "c_second"))
    assert torch.allclose(second, whole, atol=1e-4)
    # stage one's leftover is the pipeline's state after 2 of 4 steps
    states = {}

    def keep(pipe, i, t, kwargs):
        states[i] = kwargs["latents"].clone()
        return kwargs

    _pipe(tiny_sd)("a red circle", negative_prompt="blue", height=64, width=64, num_inference_steps=4,
                   guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(9),
                   callback_on_step_end=keep, output_type="latent")
    assert torch.allclose(first * SF, states[1], atol=1e-3)
    # stopping after one step without leftover noise returns the x0 estimate: x1 = xT + (s1/s0 - 1)(xT - x0)
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler.from_config(tiny_sd.components["scheduler"].config, timestep_spacing="linspace")
    sched.set_timesteps(4)
    s0, s1 = float(sched.sigmas[0]), float(sched.sigmas[1])
    x_t = torch.randn(first.shape, generator=torch.Generator("cpu").manual_seed(9)) * s0
    x1, x0 = cap["c_early_left"]["samples"] * SF, cap["c_early"]["samples"] * SF
    assert torch.allclose(x1, x_t + (s1 / s0 - 1) * (x_t - x0), atol=1e-3)
    assert (x1 - x0).abs().mean() > 0.1
    none = cap["c_none"]["samples"]  # start at the end: the (empty) input back, in the model's latent shape
    assert none.shape == whole.shape and not none.any()


def test_advanced_leftover_noise_is_portable_across_parametrisations(engine):
    """A variance-preserving solver hands over x0 + sigma * noise like the Euler family; resuming is close to one
    uninterrupted run (not equal: the multistep history restarts)."""
    _, cap = _ok(engine, _two_stage("dpmpp_2m", "karras"))
    whole, second = cap["c_whole"]["samples"], cap["c_second"]["samples"]
    assert (second - whole).norm() / whole.norm() < 0.25


def test_progress_each_step_with_previews_and_interrupt(engine):
    events: list[NodeProgress] = []
    bus = EventBus([lambda e: events.append(e) if isinstance(e, NodeProgress) and e.node_id == "ks" else None])
    _ok(engine, txt2img(seed=21, steps=5), bus=bus)
    assert [(e.value, e.max) for e in events] == [(i, 5) for i in range(1, 6)]
    previews = [e.preview for e in events]
    assert [p is not None for p in previews] == [False, False, False, True, True]
    assert previews[-1][0] == "JPEG" and previews[-1][1][:2] == b"\xff\xd8"

    flag = InterruptFlag()
    seen: list[int] = []

    def stop_at_two(e):
        if isinstance(e, NodeProgress) and e.node_id == "ks":
            seen.append(e.value)
            if e.value == 2:
                flag.set()

    result, _ = run(engine, txt2img(seed=22, steps=6), bus=EventBus([stop_at_two]), interrupt=flag)
    assert result.status == "interrupted"
    assert seen == [1, 2]


def test_conditioning_combine_averages(engine):
    wf = txt2img(seed=4, steps=2)
    wf["other"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a green tree", "clip": ["ckpt", 1]}}
    wf["self2"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                   "conditioning_2": ["pos", 0]}}
    wf["mix"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                 "conditioning_2": ["other", 0]}}
    base = _ok(engine, wf)[1]["lat"]["samples"]
    wf["ks"]["inputs"]["positive"] = ["self2", 0]
    same = _ok(engine, wf)[1]["lat"]["samples"]
    wf["ks"]["inputs"]["positive"] = ["mix", 0]
    mixed = _ok(engine, wf)[1]["lat"]["samples"]
    assert torch.allclose(same, base, atol=1e-4)
    assert (mixed - base).abs().max() > 1e-3


def test_long_prompt_and_clip_skip(engine, tiny_sd):
    long_text = " ".join(["a red circle on the blue background"] * 8)  # > 75 tokens
    wf = txt2img(positive=long_text, seed=8, steps=2)
    wf["skip"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["ckpt", 1], "stop_at_clip_layer": -2}}
    wf["short2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["skip", 0]}}
    wf["c_pos"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
    wf["c_skip"] = {"class_type": "Capture", "inputs": {"value": ["short2", 0]}}
    _, cap = _ok(engine, wf)
    te, tok = tiny_sd.components["text_encoder"], tiny_sd.components["tokenizer"]
    windows = -(-len(tok(long_text, add_special_tokens=False).input_ids) // 75)
    assert windows >= 2
    assert cap["c_pos"][0][0].shape[1] == 77 * windows  # padded windows of 77, concatenated
    assert torch.isfinite(cap["lat"]["samples"]).all()  # cond and uncond of different lengths: separate calls
    ids = tok("a red circle", padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = te(ids, output_hidden_states=True).hidden_states[-2]
        expected = te.final_layer_norm(hidden)
    assert torch.allclose(cap["c_skip"][0][0], expected, atol=1e-5)


def test_unknown_sampler_is_a_validation_error(engine):
    from nodegraph.validation import ValidationReport

    with pytest.raises(ValidationReport) as info:
        engine.prepare(txt2img(sampler="nonsense", scheduler="linear_quadratic"))
    text = str(info.value.to_json())
    assert "'nonsense'" in text and "euler" in text


def test_sdxl_added_conditioning_matches_diffusers_pipeline(tiny_sdxl):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    engine = make_engine(tiny_sdxl.config)
    _, cap = _ok(engine, txt2img("tiny-sdxl", positive="a green tree", negative="red", seed=3, steps=3, cfg=6.0,
                                 width=64, height=48))
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl.folder))
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a green tree", negative_prompt="red", height=48, width=64, num_inference_steps=3,
               guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(3), output_type="np").images
    ours = cap["img"].numpy()
    assert ours.shape == ref.shape == (1, 48, 64, 3)
    assert np.abs(ours - ref).max() <= PIXEL


def test_lora_applies_during_encoding_and_sampling_only(engine, tiny_sd):
    from safetensors.torch import save_file
    from test_lora import build_lora

    path = tiny_sd.config.model_dir("loras") / "sampling-test-style.safetensors"
    save_file(build_lora(tiny_sd.components["unet"], tiny_sd.components["text_encoder"], "kohya"), str(path))

    def graph(strength_model: float, strength_clip: float) -> dict:
        wf = txt2img(seed=31, steps=2)
        wf["lora"] = {"class_type": "LoraLoader", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": path.name, "strength_model": strength_model,
            "strength_clip": strength_clip}}
        wf["ks"]["inputs"]["model"] = ["lora", 0]
        for k in ("pos", "neg"):
            wf[k]["inputs"]["clip"] = ["lora", 1]
        wf["c_pos"] = {"class_type": "Capture", "inputs": {"value": ["pos", 0]}}
        return wf

    first = _ok(engine, {**txt2img(seed=31, steps=2), "m": {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}},
                         "c": {"class_type": "Capture", "inputs": {"value": ["ckpt", 1]}}})[1]
    plain = first["lat"]["samples"]
    weights = {k: v.clone() for k, v in first["m"].unet.state_dict().items()}
    te_weights = {k: v.clone() for k, v in first["c"].encoders[0].state_dict().items()}
    off = _ok(engine, graph(0.0, 0.0))[1]
    unet_only = _ok(engine, graph(1.0, 0.0))[1]
    both = _ok(engine, graph(1.0, 1.0))[1]
    assert torch.allclose(off["lat"]["samples"], plain, atol=1e-5)
    assert (unet_only["lat"]["samples"] - plain).abs().max() > 1e-3
    assert torch.equal(unet_only["c_pos"][0][0], off["c_pos"][0][0])
    assert (both["c_pos"][0][0] - off["c_pos"][0][0]).abs().max() > 1e-3
    # the cached base model is unchanged afterwards, bit for bit
    assert all(torch.equal(v, weights[k]) for k, v in first["m"].unet.state_dict().items())
    assert all(torch.equal(v, te_weights[k]) for k, v in first["c"].encoders[0].state_dict().items())


def test_v_prediction_matches_diffusers_pipeline(engine, tiny_sd):
    import json
    import shutil

    folder = tiny_sd.config.model_dir("checkpoints") / "tiny-sd-v"
    if not folder.exists():
        shutil.copytree(tiny_sd.folder, folder)
        cfg_path = folder / "scheduler" / "scheduler_config.json"
        cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), prediction_type="v_prediction")))
    wf = txt2img("tiny-sd-v", seed=17, steps=4)
    wf["m"] = {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}}
    _, cap = _ok(engine, wf)
    assert cap["m"].prediction_type == "v_prediction"
    pipe = _pipe(tiny_sd)
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
    ref = pipe("a red circle", negative_prompt="blue", height=64, width=64, num_inference_steps=4,
               guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(17), output_type="np").images
    assert np.abs(cap["img"].numpy() - ref).max() <= PIXEL
    plain = _ok(engine, txt2img(seed=17, steps=4))[1]["img"].numpy()
    assert np.abs(plain - ref).max() > 0.01  # the prediction type mattered
