"""ComfyUI's custom sampling nodes on the tiny model: schedules, sigma surgery, noise, guiders, and
SamplerCustom(Advanced) against KSampler (same latents for the same settings)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from graphs import make_engine, run, txt2img
from safetensors.torch import save_file

from nodegraph.api import SamplerDef
from nodegraph.config import EngineConfig
from nodegraph.diffusion.ksamplers import k_sampler
from nodegraph.diffusion.schedulers import reference_sigmas
from nodegraph.diffusion.sigmas import training_sigmas

STEPS, CFG, SEED, SIZE = 5, 5.0, 42, 32


def _k_ancestral(denoiser, x, sigmas, *, generator, callback):
    """A plugin sampler that KSampler runs on its k-diffusion path (step noise from the seed's generator)."""
    return k_sampler("euler_ancestral")(denoiser, x, sigmas, generator=generator, callback=callback)


@pytest.fixture(scope="module")
def model(tiny_sd):
    """The tiny checkpoint's MODEL (its training sigmas and latent format)."""
    from nodegraph.diffusion.loading import load_checkpoint

    return load_checkpoint(tiny_sd.folder, tiny_sd.config).model


@pytest.fixture(scope="module")
def engine(tiny_sd):
    eng = make_engine(tiny_sd.config)
    if "k_anc_test" not in eng.config.samplers.samplers:
        eng.config.samplers.add_sampler(SamplerDef("k_anc_test", _k_ancestral), "test")
    return eng


def _custom(wf: dict, *, sampler: str = "euler", scheduler: str = "normal", steps: int = STEPS, cfg: float = CFG,
            seed: int = SEED, latent: list | None = None, noise: str = "RandomNoise", prefix: str = "") -> str:
    """Add RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler + SamplerCustomAdvanced; returns its id."""
    p = prefix
    wf[p + "noise"] = ({"class_type": "RandomNoise", "inputs": {"noise_seed": seed}} if noise == "RandomNoise"
                       else {"class_type": "DisableNoise", "inputs": {}})
    wf[p + "guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                              "negative": ["neg", 0], "cfg": cfg}}
    wf[p + "sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    wf[p + "sched"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": scheduler,
                                                                  "steps": steps, "denoise": 1.0}}
    wf[p + "sca"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": [p + "noise", 0], "guider": [p + "guider", 0], "sampler": [p + "sampler", 0],
        "sigmas": [p + "sched", 0], "latent_image": latent or ["empty", 0]}}
    wf[p + "c_out"] = {"class_type": "Capture", "inputs": {"value": [p + "sca", 0]}}
    wf[p + "c_den"] = {"class_type": "Capture", "inputs": {"value": [p + "sca", 1]}}
    return p + "sca"


def _cap(engine, wf: dict) -> dict:
    result, cap = run(engine, wf)
    result.raise_for_status()
    return cap


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value (the tiny random model's latents reach hundreds)."""
    return _maxdiff(a, b) / float(b.abs().max())


# ---- sigmas -------------------------------------------------------------------------------------------------------

def _sigma_graph(nodes: dict) -> dict:
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}}
    for name, (cls, inputs) in nodes.items():
        wf[name] = {"class_type": cls, "inputs": inputs}
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    return wf


def test_schedulers_match_the_formulas(engine, model):
    cap = _cap(engine, _sigma_graph({
        "karras": ("KarrasScheduler", {"steps": 6, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 7.0}),
        "exp": ("ExponentialScheduler", {"steps": 6, "sigma_max": 10.0, "sigma_min": 0.1}),
        "poly1": ("PolyexponentialScheduler", {"steps": 6, "sigma_max": 10.0, "sigma_min": 0.1, "rho": 1.0}),
        "poly2": ("PolyexponentialScheduler", {"steps": 6, "sigma_max": 10.0, "sigma_min": 0.1, "rho": 2.0}),
        "basic": ("BasicScheduler", {"model": ["ckpt", 0], "scheduler": "karras", "steps": 8, "denoise": 1.0}),
        "half": ("BasicScheduler", {"model": ["ckpt", 0], "scheduler": "normal", "steps": 4, "denoise": 0.5}),
        "none": ("BasicScheduler", {"model": ["ckpt", 0], "scheduler": "normal", "steps": 4, "denoise": 0.0}),
        "beta": ("BetaSamplingScheduler", {"model": ["ckpt", 0], "steps": 10, "alpha": 0.6, "beta": 0.6}),
        "turbo": ("SDTurboScheduler", {"model": ["ckpt", 0], "steps": 2, "denoise": 0.8}),
    }))
    for name in ("karras", "exp", "poly1", "poly2", "basic", "half", "beta", "turbo"):
        assert cap["c_" + name].dtype == torch.float32 and cap["c_" + name][-1] == 0.0, name
    ramp = np.linspace(0, 1, 6)
    karras = (14.614642 ** (1 / 7) + ramp * (0.0291675 ** (1 / 7) - 14.614642 ** (1 / 7))) ** 7
    assert np.allclose(cap["c_karras"][:-1].numpy(), karras, rtol=1e-5)
    assert np.allclose(cap["c_exp"][:-1].numpy(), np.geomspace(10.0, 0.1, 6), rtol=1e-5)
    assert torch.allclose(cap["c_poly1"], cap["c_exp"], rtol=1e-5)
    log_poly2 = np.linspace(1, 0, 6) ** 2 * (math.log(10.0) - math.log(0.1)) + math.log(0.1)
    assert np.allclose(cap["c_poly2"][:-1].numpy(), np.exp(log_poly2), rtol=1e-5)
    acp = 1.0 / (training_sigmas(model) ** 2 + 1.0)
    assert np.allclose(cap["c_basic"].numpy(), reference_sigmas("karras", 8, acp), rtol=1e-6)
    assert np.allclose(cap["c_half"].numpy(), reference_sigmas("normal", 8, acp)[-5:], rtol=1e-6)
    assert cap["c_none"].numel() == 0
    assert np.allclose(cap["c_beta"].numpy(), reference_sigmas("beta", 10, acp), rtol=1e-6)
    train = training_sigmas(model)
    # denoise 0.8 starts 10 - int(8) = 2 entries into 999, 899, …: timesteps 799 and 699.
    assert np.allclose(cap["c_turbo"].numpy(), [train[799], train[699], 0.0], rtol=1e-6)


def test_sigma_surgery_matches_comfyui():
    from nodegraph.diffusion import sigmas as s

    sig = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = s.split(sig, 2)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = s.split_denoise(sig, 0.5)  # the last round(4 * 0.5) = 2 steps go low
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = s.split_denoise(sig, 0.0)  # ComfyUI slices [:-0]: nothing high, only the last level low
    assert high.numel() == 0 and low.tolist() == [0.0]
    flipped = s.flip(sig)
    assert flipped.tolist() == pytest.approx([0.0001, 1.0, 2.0, 5.0, 10.0]) and sig[0] == 10.0  # input untouched
    assert s.flip(torch.zeros(0)).numel() == 0
    first = s.set_first(sig, 136.0)
    assert first.tolist() == [136.0, 5.0, 2.0, 1.0, 0.0] and sig[0] == 10.0


# ---- parity with KSampler -----------------------------------------------------------------------------------------

def test_sampler_custom_advanced_matches_ksampler_euler(engine):
    """euler: KSampler runs diffusers' EulerDiscreteScheduler, custom sampling the k-diffusion Euler step."""
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED, sampler="euler", scheduler="normal")
    _custom(wf, sampler="euler", scheduler="normal")
    cap = _cap(engine, wf)
    ks, custom = cap["lat"]["samples"], cap["c_out"]["samples"]
    print(f"euler parity: max |KSampler - SamplerCustomAdvanced| = {_maxdiff(ks, custom):.3g} "
          f"(latents up to {float(ks.abs().max()):.3g})")
    assert _rel(custom, ks) < 1e-5
    # Euler's last step to sigma 0 lands on the model's estimate: denoised_output is the output.
    assert _rel(cap["c_den"]["samples"], custom) < 1e-6


def test_sampler_custom_advanced_matches_ksampler_exactly_on_the_k_path(engine):
    """A sampler KSampler runs in k-diffusion form (ancestral: step noise continues the seed's generator)."""
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED, sampler="k_anc_test", scheduler="karras")
    _custom(wf, sampler="k_anc_test", scheduler="karras")
    cap = _cap(engine, wf)
    assert torch.equal(cap["lat"]["samples"], cap["c_out"]["samples"])
    other = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED + 1, sampler="k_anc_test",
                    scheduler="karras")
    assert _rel(_cap(engine, other)["lat"]["samples"], cap["c_out"]["samples"]) > 1e-2


def test_sampler_custom_equals_advanced_and_add_noise_off(engine):
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED)
    _custom(wf)
    for name, add in (("sc", True), ("sc_off", False)):
        wf[name] = {"class_type": "SamplerCustom", "inputs": {
            "model": ["ckpt", 0], "add_noise": add, "noise_seed": SEED, "cfg": CFG, "positive": ["pos", 0],
            "negative": ["neg", 0], "sampler": ["sampler", 0], "sigmas": ["sched", 0], "latent_image": ["empty", 0]}}
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": [name, 0]}}
    _custom(wf, noise="DisableNoise", prefix="off_")
    cap = _cap(engine, wf)
    assert torch.equal(cap["c_sc"]["samples"], cap["c_out"]["samples"])
    assert torch.equal(cap["c_sc_off"]["samples"], cap["off_c_out"]["samples"])
    assert _rel(cap["c_sc_off"]["samples"], cap["c_sc"]["samples"]) > 1e-2


def test_split_sigmas_chain_equals_one_run(engine):
    """SplitSigmas: the high part from RandomNoise, then the low part from DisableNoise on its output."""
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED)
    _custom(wf)
    wf["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sched", 0], "step": 2}}
    wf["hi"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["split", 0],
        "latent_image": ["empty", 0]}}
    wf["off"] = {"class_type": "DisableNoise", "inputs": {}}
    wf["lo"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["off", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["split", 1],
        "latent_image": ["hi", 0]}}
    for name, ref in (("c_hi", ["hi", 0]), ("c_hi_den", ["hi", 1]), ("c_lo", ["lo", 0])):
        wf[name] = {"class_type": "Capture", "inputs": {"value": ref}}
    cap = _cap(engine, wf)
    one, chained = cap["c_out"]["samples"], cap["c_lo"]["samples"]
    print(f"split chain: max |one run - chained| = {_maxdiff(one, chained):.3g}")
    assert _rel(chained, one) < 1e-5
    # Stopping at a sigma above 0 keeps the noise: the output is not the model's clean estimate.
    assert _rel(cap["c_hi_den"]["samples"], cap["c_hi"]["samples"]) > 1e-2


def test_disable_noise_plus_add_noise_equals_random_noise(engine):
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED)
    _custom(wf)
    wf["addn"] = {"class_type": "AddNoise", "inputs": {"model": ["ckpt", 0], "noise": ["noise", 0],
                                                        "sigmas": ["sched", 0], "latent_image": ["empty", 0]}}
    wf["c_addn"] = {"class_type": "Capture", "inputs": {"value": ["addn", 0]}}
    _custom(wf, noise="DisableNoise", latent=["addn", 0], prefix="pre_")
    cap = _cap(engine, wf)
    # AddNoise scales by |sigmas[0] - sigmas[-1]| = sigmas[0] here; the noisy latent is stored unscaled.
    sched = cap["c_addn"]["samples"]
    assert sched.abs().max() > 10  # noise of sigma ~14.6 over the scaling factor
    assert _rel(cap["pre_c_out"]["samples"], cap["c_out"]["samples"]) < 1e-5


def test_add_noise_on_a_latent_and_empty_sigmas(model):
    from nodegraph.diffusion import guiders

    samples = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latent = {"samples": samples}
    sig = torch.tensor([3.0, 1.0, 0.5])
    out = guiders.add_noise(model, guiders.RandomNoise(7), sig, latent)["samples"]
    noise = guiders.RandomNoise(7).generate_noise(latent)
    expected = samples + noise * 2.5 / model.latent.scaling_factor
    assert torch.allclose(out, expected, atol=1e-5)
    assert guiders.add_noise(model, guiders.RandomNoise(7), torch.zeros(0), latent) is latent
    assert torch.allclose(guiders.add_noise(model, guiders.EmptyNoise(), sig, latent)["samples"], samples, atol=1e-6)


def test_empty_sigmas_return_the_latent_and_one_sigma_only_noises(engine, model):
    wf = txt2img(width=SIZE, height=SIZE, steps=STEPS, cfg=CFG, seed=SEED)
    _custom(wf)
    wf["sched"]["inputs"]["denoise"] = 0.0  # no sigmas at all
    wf["one"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sched2", 0], "step": 0}}
    wf["sched2"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                               "steps": STEPS, "denoise": 1.0}}
    wf["sca1"] = dict(wf["sca"], inputs=dict(wf["sca"]["inputs"], sigmas=["one", 0]))
    wf["c_one"] = {"class_type": "Capture", "inputs": {"value": ["sca1", 0]}}
    wf["c_one_den"] = {"class_type": "Capture", "inputs": {"value": ["sca1", 1]}}
    cap = _cap(engine, wf)
    assert not cap["c_out"]["samples"].any() and torch.equal(cap["c_den"]["samples"], cap["c_out"]["samples"])
    from nodegraph.diffusion.guiders import RandomNoise

    noise = RandomNoise(SEED).generate_noise({"samples": cap["c_out"]["samples"]})
    sigma0 = np.float32(reference_sigmas("normal", STEPS, 1.0 / (training_sigmas(model) ** 2 + 1.0))[0])
    expected = noise * float(sigma0) / model.latent.scaling_factor
    assert torch.allclose(cap["c_one"]["samples"], expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(cap["c_one_den"]["samples"], cap["c_one"]["samples"])  # no step ran: no clean estimate


# ---- guiders --------------------------------------------------------------------------------------------------------

def _guided(engine, guiders: dict) -> dict:
    """Run SamplerCustomAdvanced once per guider (RandomNoise, euler, normal schedule); {name: samples}."""
    wf = txt2img(width=SIZE, height=SIZE, steps=2, cfg=CFG, seed=SEED)
    wf["other"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a green triangle", "clip": ["ckpt", 1]}}
    _custom(wf, steps=2)
    for name, (cls, inputs) in guiders.items():
        wf["g_" + name] = {"class_type": cls, "inputs": dict(inputs, model=["ckpt", 0])}
        wf["s_" + name] = dict(wf["sca"], inputs=dict(wf["sca"]["inputs"], guider=["g_" + name, 0]))
        wf["c_" + name] = {"class_type": "Capture", "inputs": {"value": ["s_" + name, 0]}}
    cap = _cap(engine, wf)
    return {name: cap["c_" + name]["samples"] for name in guiders}


def test_basic_and_dual_guiders(engine):
    pos, neg, other = ["pos", 0], ["neg", 0], ["other", 0]

    def dual(c1, c2, n, cfg1, cfg2, style="regular"):
        return ("DualCFGGuider", {"cond1": c1, "cond2": c2, "negative": n, "cfg_conds": cfg1,
                                  "cfg_cond2_negative": cfg2, "style": style})

    def cfg(p, n, scale):
        return ("CFGGuider", {"positive": p, "negative": n, "cfg": scale})

    out = _guided(engine, {
        "basic": ("BasicGuider", {"conditioning": pos}), "cfg1": cfg(pos, neg, 1.0),
        "cfg_pos_neg": cfg(pos, neg, 4.0), "cfg_pos_other": cfg(pos, other, 3.0),
        "dual_same": dual(pos, pos, neg, 2.5, 4.0),  # cond1 = cond2: plain CFG at cfg_cond2_negative
        "dual_nested1": dual(pos, other, neg, 1.0, 4.0, "nested"),  # nested, cfg_conds 1: CFG(cond1, neg)
        "dual_noneg": dual(pos, other, neg, 3.0, 1.0),  # negative skipped: CFG(cond1, cond2, cfg_conds)
        "dual": dual(pos, other, neg, 3.0, 4.0), "dual_nested": dual(pos, other, neg, 3.0, 4.0, "nested"),
    })
    assert torch.equal(out["basic"], out["cfg1"])
    assert _rel(out["dual_same"], out["cfg_pos_neg"]) < 1e-5
    assert _rel(out["dual_nested1"], out["cfg_pos_neg"]) < 1e-5
    assert _rel(out["dual_noneg"], out["cfg_pos_other"]) < 1e-5
    assert _rel(out["dual"], out["dual_nested"]) > 1e-3  # the two styles differ when every scale matters
    assert _rel(out["dual"], out["cfg_pos_neg"]) > 1e-3


def test_dual_denoiser_combines_three_estimates(monkeypatch):
    """The formulas of ComfyUI's Guider_DualCFG on fixed estimates, and the unconditional side CFG++ sees."""
    from nodegraph.diffusion import custom, guiders

    p, m, n = torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([1.0])
    monkeypatch.setattr(custom.KDenoiser, "split", lambda self, x, sigma: (p, m))
    d = guiders.DualDenoiser.__new__(guiders.DualDenoiser)
    d.cfg1, d.cfg2, d._neg = 2.0, 5.0, lambda x, sigma: n
    # regular: n + 5 (m - n) + 2 (p - m) = 8; nested: n + 5 (m + 2 (p - m) - n) = 16
    for nested, expected, uncond in ((False, 8.0, n), (True, 16.0, m)):
        d.nested = nested
        guided, side = d.split(None, 1.0)
        assert float(guided) == expected and float(d(None, 1.0)) == expected and torch.equal(side, uncond)


# ---- LoRA and inpainting --------------------------------------------------------------------------------------------

def _lora(unet) -> dict:
    gen = torch.Generator().manual_seed(3)
    out = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn1.to_q")):
            key = "lora_unet_" + name.replace(".", "_")
            out[key + ".lora_down.weight"] = torch.randn(4, module.weight.shape[1], generator=gen) * 0.3
            out[key + ".lora_up.weight"] = torch.randn(module.weight.shape[0], 4, generator=gen) * 0.3
            out[key + ".alpha"] = torch.tensor(4.0)
    return out


def test_guider_applies_the_model_loras_and_noise_mask_like_ksampler(tiny_sd, tmp_path):
    from nodegraph.diffusion.loading import load_checkpoint

    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    shutil.copytree(tiny_sd.folder, config.model_dir("checkpoints") / "tiny-sd")
    unet = load_checkpoint(tiny_sd.folder, tiny_sd.config).model.unet
    save_file(_lora(unet), str(config.model_dir("loras") / "style.safetensors"))
    eng = make_engine(config)
    eng.config.samplers.add_sampler(SamplerDef("k_anc_test", _k_ancestral), "test")
    wf = txt2img(width=SIZE, height=SIZE, steps=3, cfg=CFG, seed=SEED, sampler="k_anc_test", scheduler="normal")
    wf["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                          "lora_name": "style.safetensors", "strength_model": 1.0,
                                                          "strength_clip": 0.0}}
    wf["zero"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}}
    wf["half"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}}
    wf["mask"] = {"class_type": "MaskComposite", "inputs": {"destination": ["zero", 0], "source": ["half", 0],
                                                            "x": 0, "y": 0, "operation": "add"}}
    wf["shape"] = {"class_type": "ShapeImage", "inputs": {
        "shape": "circle", "color": "red", "background": "blue", "size": SIZE, "center_x": 0.5, "center_y": 0.5,
        "radius": 0.3}}
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["shape", 0], "vae": ["ckpt", 2]}}
    wf["c_enc"] = {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}
    wf["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["mask", 0]}}
    wf["ks"]["inputs"].update(model=["lora", 0], latent_image=["masked", 0])
    _custom(wf, sampler="k_anc_test", steps=3, latent=["masked", 0])
    wf["guider"]["inputs"]["model"] = ["lora", 0]
    _custom(wf, sampler="k_anc_test", steps=3, latent=["masked", 0], prefix="base_")
    cap = _cap(eng, wf)
    with_lora, base = cap["c_out"]["samples"], cap["base_c_out"]["samples"]
    assert torch.equal(with_lora, cap["lat"]["samples"])  # KSampler with the same LoRA, mask and settings
    assert _rel(base, with_lora) > 1e-3  # the LoRA changed the result
    # The mask covers the left half: the right half keeps the encoded latent, the left half is resampled.
    enc = cap["c_enc"]["samples"]
    half = enc.shape[-1] // 2
    assert torch.allclose(with_lora[..., half:], enc[..., half:], atol=1e-5)
    assert _rel(with_lora[..., :half], enc[..., :half]) > 1e-2


# ---- the saved workflow ---------------------------------------------------------------------------------------------

def test_custom_sampling_workflow_draws_the_prompt(tmp_path):
    """workflows/custom_sampling.json on the embedded model draws what its prompt says."""
    import json
    from pathlib import Path

    from nodegraph.api import image_to_pils
    from nodegraph.training.classify import classify

    wf = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "custom_sampling.json").read_text())
    assert wf["6"]["inputs"]["text"] == "a yellow triangle on a black background"
    del wf["9"]  # SaveImage: capture the decoded image instead
    wf["img"] = {"class_type": "Capture", "inputs": {"value": ["8", 0]}}
    config = EngineConfig(home=tmp_path)
    config.ensure_dirs()
    cap = _cap(make_engine(config), wf)
    found = classify(np.asarray(image_to_pils(cap["img"])[0].convert("RGB")))
    assert (found["fg"], found["shape"], found["bg"]) == ("yellow", "triangle", "black"), found


def test_ksampler_select_refuses_a_sampler_without_a_k_form(engine):
    from nodegraph.api import sampler_problem

    assert sampler_problem(engine.config, "euler") is None
    assert sampler_problem(engine.config, "k_anc_test") is None  # a plugin sampler
    problem = sampler_problem(engine.config, "no_such_sampler")
    assert "no_such_sampler" in problem and "euler" in problem
