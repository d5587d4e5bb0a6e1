"""ComfyUI's conditioning nodes on the tiny model: zero-out, average, concat, timestep ranges and area composition
(built-in diffusers sampler and a plugin k-diffusion sampler)."""

from __future__ import annotations

import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph.api import SamplerDef


def _k_euler(denoiser, x, sigmas, *, generator, callback):
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, float(sigmas[i]))
        x = x + (x - x0) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        callback(i + 1, len(sigmas) - 1, x0)
    return x


@pytest.fixture(scope="module")
def engine(tiny_sd):
    eng = make_engine(tiny_sd.config)
    if "k_euler_cond" not in eng.config.samplers.samplers:
        eng.config.samplers.add_sampler(SamplerDef("k_euler_cond", _k_euler), "test")
    return eng


def _cap(engine, wf):
    result, cap = run(engine, wf)
    result.raise_for_status()
    return cap


def _encode(wf: dict, node: str, text: str) -> list:
    wf[node] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["ckpt", 1]}}
    return [node, 0]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding (batched and single UNet calls differ in the last bits; latents reach ~100s)."""
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-5)


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-3 * b.abs().max())


def _latent(engine, wf: dict, positive: list, **ks) -> torch.Tensor:
    wf["ks"]["inputs"].update(positive=positive, **ks)
    return _cap(engine, wf)["lat"]["samples"]


def test_zero_out_average_concat_by_hand(engine):
    wf = txt2img(positive="a red circle", negative="a blue square")
    wf["zero"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["pos", 0]}}
    wf["avg"] = {"class_type": "ConditioningAverage", "inputs": {
        "conditioning_to": ["pos", 0], "conditioning_from": ["neg", 0], "conditioning_to_strength": 0.25}}
    wf["cat"] = {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["pos", 0],
                                                                "conditioning_from": ["neg", 0]}}
    for name in ("pos", "neg", "zero", "avg", "cat"):
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    cap = _cap(engine, wf)
    (pos, pos_x), = cap["c_pos"]
    (neg, _), = cap["c_neg"]
    (zero, zero_x), = cap["c_zero"]
    assert zero.shape == pos.shape and not zero.any() and pos.any()
    assert zero_x.get("pooled_output") is None or not zero_x["pooled_output"].any()
    (avg, _), = cap["c_avg"]
    assert torch.allclose(avg, pos * 0.25 + neg * 0.75)
    (cat, _), = cap["c_cat"]
    assert cat.shape == (pos.shape[0], pos.shape[1] + neg.shape[1], pos.shape[2])
    assert torch.equal(cat[:, :pos.shape[1]], pos) and torch.equal(cat[:, pos.shape[1]:], neg)


def test_zero_out_zeroes_the_sdxl_pooled_output(tiny_sdxl):
    eng = make_engine(tiny_sdxl.config)
    wf = txt2img("tiny-sdxl", steps=2)
    wf["zero"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["neg", 0]}}
    wf["ks"]["inputs"]["negative"] = ["zero", 0]
    wf["c"] = {"class_type": "Capture", "inputs": {"value": ["zero", 0]}}
    cap = _cap(eng, wf)
    (emb, extras), = cap["c"]
    assert not emb.any() and extras["pooled_output"].shape[-1] > 0 and not extras["pooled_output"].any()
    assert torch.isfinite(cap["lat"]["samples"]).all()


@pytest.mark.parametrize("sampler", ["euler", "k_euler_cond"])
def test_whole_area_at_strength_one_equals_plain(engine, sampler):
    wf = txt2img(sampler=sampler)
    plain = _latent(engine, wf, ["pos", 0])
    wf["area"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["pos", 0], "width": 64,
                                                                  "height": 64, "x": 0, "y": 0, "strength": 1.0}}
    whole = _latent(engine, wf, ["area", 0])
    assert _close(whole, plain)
    wf["pct"] = {"class_type": "ConditioningSetAreaPercentage", "inputs": {
        "conditioning": ["pos", 0], "width": 1.0, "height": 1.0, "x": 0.0, "y": 0.0, "strength": 1.0}}
    assert _close(_latent(engine, wf, ["pct", 0]), plain)


@pytest.mark.parametrize("sampler", ["euler", "k_euler_cond"])
def test_left_and_right_areas_each_change_only_their_half(engine, sampler):
    wf = txt2img(width=128, height=64, cfg=1.0, sampler=sampler)
    _encode(wf, "blue", "a blue square")
    wf["left"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["pos", 0], "width": 64,
                                                                  "height": 64, "x": 0, "y": 0, "strength": 1.0}}
    wf["right"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["blue", 0], "width": 64,
                                                                   "height": 64, "x": 64, "y": 0, "strength": 1.0}}
    wf["both"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["left", 0],
                                                                  "conditioning_2": ["right", 0]}}
    both = _latent(engine, wf, ["both", 0])
    left = _latent(engine, wf, ["left", 0])
    right = _latent(engine, wf, ["right", 0])
    half = both.shape[-1] // 2
    assert _close(both[..., :half], left[..., :half])
    assert _close(both[..., half:], right[..., half:])
    assert _differ(left[..., :half], right[..., :half])  # each area did change its own half


@pytest.mark.parametrize("sampler", ["euler", "k_euler_cond"])
def test_two_areas_with_guidance_agree_with_single_areas_away_from_the_seam(engine, sampler):
    wf = txt2img(width=128, height=64, cfg=4.0, sampler=sampler)
    _encode(wf, "blue", "a blue square")
    for name, src, x in (("left", "pos", 0), ("right", "blue", 64)):
        wf[name] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": [src, 0], "width": 64,
                                                                    "height": 64, "x": x, "y": 0, "strength": 1.0}}
    wf["both"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["left", 0],
                                                                  "conditioning_2": ["right", 0]}}
    both, left, right = (_latent(engine, wf, [n, 0]) for n in ("both", "left", "right"))
    half = both.shape[-1] // 2
    far_l, far_r = slice(0, half - 8), slice(half + 8, None)
    for far, own, other in ((far_l, left, right), (far_r, right, left)):
        gap = (own[..., far] - other[..., far]).abs().mean()
        assert (both[..., far] - own[..., far]).abs().mean() < 0.25 * gap


def test_area_strength_and_mask_weight_the_blend(engine):
    wf = txt2img(cfg=1.0)
    _encode(wf, "blue", "a blue square")
    plain = _latent(engine, wf, ["pos", 0])
    wf["weak"] = {"class_type": "ConditioningSetAreaStrength", "inputs": {"conditioning": ["blue", 0],
                                                                          "strength": 0.0}}
    wf["mix"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                 "conditioning_2": ["weak", 0]}}
    assert _close(_latent(engine, wf, ["mix", 0]), plain)  # strength 0 = no say
    wf["mask"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    wf["masked"] = {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["pos", 0], "mask": ["mask", 0],
                                                                    "strength": 1.0, "set_cond_area": "default"}}
    assert _close(_latent(engine, wf, ["masked", 0]), plain)


@pytest.mark.parametrize("sampler", ["euler", "k_euler_cond"])
def test_timestep_range_outside_has_no_effect(engine, sampler):
    wf = txt2img(sampler=sampler)
    _encode(wf, "blue", "a blue square")
    plain = _latent(engine, wf, ["pos", 0])
    wf["rng"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["blue", 0],
                                                                          "start": 1.0, "end": 1.0}}
    wf["mix"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                 "conditioning_2": ["rng", 0]}}
    assert _close(_latent(engine, wf, ["mix", 0]), plain)
    wf["rng"]["inputs"].update(start=0.0, end=1.0)
    always = _latent(engine, wf, ["mix", 0])
    wf["rng"]["inputs"].update(start=0.5, end=1.0)
    late = _latent(engine, wf, ["mix", 0])
    assert _differ(always, plain)
    assert not _close(late, plain) and not _close(late, always)  # the last half of the steps only: a small change


def test_regions_feather_inner_edges_and_follow_mask_bounds():
    from nodegraph.diffusion.regions import region_of

    # the right half of a 64×32-cell latent (8-pixel units, 1/8 scale): feathered on its inner (left) edge only
    r = region_of({"area": (32, 32, 0, 32), "strength": 2.0}, (32, 64), 8, 1, "cpu", "positive")
    assert r.area == (32, 32, 0, 32)
    assert torch.allclose(r.mult[0, 0, 5, :8], 2.0 * torch.arange(1, 9) / 8) and bool((r.mult[0, 0, :, 8:] == 2).all())
    pct = region_of({"area": ("percentage", 0.5, 0.25, 0.5, 0.5)}, (32, 64), 8, 1, "cpu", "positive")
    assert pct.area == (16, 16, 16, 32)
    mask = torch.zeros(1, 256, 512)
    mask[:, 40:120, 16:200] = 1.0
    m = region_of({"mask": mask, "mask_strength": 0.5, "set_area_to_bounds": True}, (32, 64), 8, 2, "cpu", "neg")
    assert m.area == (10, 23, 5, 2) and m.mult.shape == (2, 1, 10, 23) and bool((m.mult == 0.5).all())
    full = region_of({"mask": mask, "set_area_to_bounds": False}, (32, 64), 8, 1, "cpu", "neg")
    assert full.area == (32, 64, 0, 0) and float(full.mult.max()) == 1.0 and float(full.mult.min()) == 0.0
    rng = region_of({"start_percent": 0.25, "end_percent": 0.75}, (32, 64), 8, 1, "cpu", "positive")
    assert rng.active(500) and not rng.active(800) and not rng.active(200)
    assert region_of({"strength": 0.5}, (32, 64), 8, 1, "cpu", "positive") is None
