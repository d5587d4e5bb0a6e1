"""Model patches (RescaleCFG, PerpNeg, SAG, FreeU, DifferentialDiffusion, ModelSamplingDiscrete) against hand
computations on tensors and on the tiny model, in the diffusers path, the k-diffusion path and custom sampling."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from graphs import make_engine, run, txt2img

from nodegraph._tiny import TEXT_HIDDEN
from nodegraph.diffusion import patches as P
from nodegraph.diffusion.attention import (
    _TomeProcessor,
    install_freeu,
    install_sag_recorder,
    install_tome,
)
from nodegraph.diffusion.custom import KDenoiser, SamplerDef, SamplerRegistry
from nodegraph.diffusion.ksamplers import k_sampler
from nodegraph.diffusion.model_sampling import ZSNR_LAST_ALPHA_CUMPROD, discrete_config
from nodegraph.diffusion.sampling import (
    SamplingOptions,
    _conds,
    _sigma_table,
    make_noise,
    sample,
)
from nodegraph.diffusion.schedulers import alphas_cumprod_of

SEED = 7


def _cond(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 77, TEXT_HIDDEN, generator=g), {})]


POS, NEG, EMPTY = _cond(1), _cond(2), _cond(3)


def _latent(size: int = 8) -> dict:
    return {"samples": torch.zeros(1, 4, size, size)}


def _k_table() -> SamplerRegistry:
    table = SamplerRegistry()
    table.add_sampler(SamplerDef("k_euler_test", k_sampler("euler")), "test")
    return table


def _run(model, devices, sampler="euler", scheduler="normal", steps=3, cfg=5.0, latent=None, samplers=None):
    opts = SamplingOptions(sampler, scheduler, steps, cfg, SEED)
    return sample(model, POS, NEG, latent or _latent(), opts, devices, samplers=samplers)["samples"]


# ---- tensor formulas -------------------------------------------------------------------------------------------

def _vp_rescale(x, sigma, cond, uncond, cfg, multiplier):
    """RescaleCFG by the paper's VP form: v = alpha·eps - sigma_vp·x0, rescale v, x0 = alpha·x_vp - sigma_vp·v."""
    alpha, s_vp = 1 / math.sqrt(1 + sigma ** 2), sigma / math.sqrt(1 + sigma ** 2)
    x_vp = x * alpha
    v = {k: alpha * (x - x0) / sigma - s_vp * x0 for k, x0 in (("c", cond), ("u", uncond))}
    v_cfg = v["u"] + cfg * (v["c"] - v["u"])
    factor = v["c"].flatten(1).std(1).view(-1, 1, 1, 1) / v_cfg.flatten(1).std(1).view(-1, 1, 1, 1)
    v_final = multiplier * v_cfg * factor + (1 - multiplier) * v_cfg
    return alpha * x_vp - s_vp * v_final


def test_rescale_cfg_formula():
    g = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for sigma, mult in ((0.5, 0.7), (3.0, 1.0), (14.6, 0.3)):
        got = P.rescale_cfg(x, sigma, cond, uncond, 6.0, mult)
        torch.testing.assert_close(got, _vp_rescale(x, sigma, cond, uncond, 6.0, mult))
    plain = P.rescale_cfg(x, 2.0, cond, uncond, 6.0, 0.0)
    torch.testing.assert_close(plain, uncond + 6.0 * (cond - uncond))


def test_perp_neg_projection():
    empty = torch.zeros(1, 2, 1, 1)
    pos = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    parallel, perpendicular = torch.tensor([3.0, 0.0]).view(1, 2, 1, 1), torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(P.perp_neg(pos, parallel, empty, 1.0, 4.0), 4.0 * pos)  # no perpendicular part
    torch.testing.assert_close(P.perp_neg(pos, perpendicular, empty, 0.5, 4.0), 4.0 * (pos - 0.5 * perpendicular))
    e = torch.full((1, 2, 1, 1), 0.25)
    torch.testing.assert_close(P.perp_neg(pos + e, perpendicular + e, e, 1.0, 2.0), e + 2.0 * (pos - perpendicular))


def _np_fourier(x, scale):
    f = np.fft.fftshift(np.fft.fft2(x.numpy()), axes=(-2, -1))
    h, w = f.shape[-2:]
    f[..., h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1] *= scale
    return torch.from_numpy(np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))).real).float()


def test_freeu_rule_on_tensors():
    g = torch.Generator().manual_seed(1)
    h, hsp = torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    h1, s1 = P.freeu_skip(h, hsp, 1.5, 0.3, 1)
    torch.testing.assert_close(h1[:, :4], h[:, :4] * 1.5)
    torch.testing.assert_close(h1[:, 4:], h[:, 4:])
    torch.testing.assert_close(s1, _np_fourier(hsp, 0.3), atol=1e-5, rtol=1e-5)
    h2, _ = P.freeu_skip(h, hsp, 1.5, 0.3, 2)
    mean = h.mean(1, keepdim=True)
    lo, hi = mean.amin(dim=(2, 3), keepdim=True), mean.amax(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(h2[:, :4], h[:, :4] * (0.5 * (mean - lo) / (hi - lo) + 1))


def test_freeu_on_the_unet_skip_features(model):
    """The first up-block resnet (backbone 64 = 2 × base 32 channels: b2/s2) gets ComfyUI's scaled input; the UNet
    hooks are gone afterwards."""
    unet = model.unet
    resnet = unet.up_blocks[0].resnets[0]
    seen = []

    def record(module, args):
        seen.append(args[0].clone())

    x, t, emb = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor(500.0), POS[0][0]
    with torch.no_grad():
        handle = resnet.register_forward_pre_hook(record)
        base = unet(x, t, encoder_hidden_states=emb).sample
        handle.remove()
        with install_freeu(unet, P.FreeU(1.1, 1.7, 0.9, 0.4, 1)):
            handle = resnet.register_forward_pre_hook(record)  # runs after FreeU's hook: sees its output
            patched = unet(x, t, encoder_hidden_states=emb).sample
            handle.remove()
        after = unet(x, t, encoder_hidden_states=emb).sample
    plain_in, patched_in = seen[0], seen[1]
    torch.testing.assert_close(patched_in[:, :32], plain_in[:, :32] * 1.7)
    torch.testing.assert_close(patched_in[:, 32:64], plain_in[:, 32:64])
    torch.testing.assert_close(patched_in[:, 64:], _np_fourier(plain_in[:, 64:], 0.4), atol=1e-5, rtol=1e-5)
    assert not torch.equal(base, patched)
    assert torch.equal(base, after)


def test_token_merging_merges_queries_only(model):
    """One full-resolution self-attention under ToMe equals tomesd's merge applied to its queries by hand (keys and
    values whole, output unmerged); ratio 0 and the restored UNet give the plain output."""
    from tomesd.merge import bipartite_soft_matching_random2d

    unet = model.unet
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    x, t, emb = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor(300.0), POS[0][0]
    h = torch.randn(1, 64, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=emb).sample
        with install_tome(unet, 0.0):
            assert torch.equal(unet(x, t, encoder_hidden_states=emb).sample, base)
        with install_tome(unet, 0.5):
            merged = unet(x, t, encoder_hidden_states=emb).sample
        state = {"shape": (1, 4, 8, 8), "generator": torch.Generator().manual_seed(3)}
        got = _TomeProcessor(state, 0.5, attn.processor)(attn, h)
        merge, unmerge = bipartite_soft_matching_random2d(h, 8, 8, 2, 2, 32, no_rand=False,
                                                          generator=torch.Generator().manual_seed(3))
        q = attn.to_q(merge(h))
        assert q.shape[1] == 64 - 32
        k, v = attn.to_k(h), attn.to_v(h)
        heads, dim = attn.heads, k.shape[-1] // attn.heads
        split = [a.view(1, -1, heads, dim).transpose(1, 2) for a in (q, k, v)]
        probs = (split[0] @ split[1].transpose(-1, -2) / math.sqrt(dim)).softmax(-1)
        out = (probs @ split[2]).transpose(1, 2).reshape(1, -1, heads * dim)
        expected = unmerge(attn.to_out[0](out))
        after = unet(x, t, encoder_hidden_states=emb).sample
    assert not torch.equal(merged, base)
    assert torch.equal(after, base)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---- ModelSamplingDiscrete -------------------------------------------------------------------------------------

def test_model_sampling_v_prediction_equals_a_v_checkpoint(model, devices):
    patched = dataclasses.replace(model, scheduler_config=discrete_config(model.scheduler_config, "v_prediction",
                                                                          False))
    v_ckpt = dataclasses.replace(model, scheduler_config=dict(model.scheduler_config, prediction_type="v_prediction"))
    assert patched.prediction_type == "v_prediction"
    for sampler in ("euler", "dpmpp_2m"):
        assert torch.equal(_run(patched, devices, sampler), _run(v_ckpt, devices, sampler))
    table = _k_table()
    assert torch.equal(_run(patched, devices, "k_euler_test", samplers=table),
                       _run(v_ckpt, devices, "k_euler_test", samplers=table))
    eps = dataclasses.replace(model, scheduler_config=discrete_config(patched.scheduler_config, "eps", False))
    assert torch.equal(_run(eps, devices), _run(model, devices))  # the second patch starts from the original


def test_zsnr_sigmas_end_at_comfyuis_value(model):
    config = discrete_config(model.scheduler_config, "v_prediction", True)
    sig = _sigma_table(config)
    expected_last = math.sqrt((1 - ZSNR_LAST_ALPHA_CUMPROD) / ZSNR_LAST_ALPHA_CUMPROD)
    assert sig[-1] == pytest.approx(expected_last, rel=1e-4)
    original = alphas_cumprod_of(model.scheduler_config)
    assert sig[0] == pytest.approx(math.sqrt((1 - original[0]) / original[0]), rel=1e-5)
    import diffusers

    euler = diffusers.EulerDiscreteScheduler.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    assert float(euler.alphas_cumprod[-1]) == pytest.approx(ZSNR_LAST_ALPHA_CUMPROD, rel=1e-3)  # diffusers' too


def test_x0_lcm_and_img_to_img_denoisers(model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    emb = POS[0][0]
    table = _sigma_table(model.scheduler_config)
    conds = _conds(model, POS, 1, (64, 64), "cpu", torch.float32, "positive")
    with torch.no_grad():
        x0_model = dataclasses.replace(model, scheduler_config=discrete_config(model.scheduler_config, "x0", False))
        sigma = float(table[600])
        out = model.unet(x / math.sqrt(sigma ** 2 + 1), torch.tensor(600.0), encoder_hidden_states=emb).sample
        torch.testing.assert_close(KDenoiser(x0_model, conds, [], POS, 1.0, torch.float32)(x, sigma), out,
                                   atol=1e-4, rtol=1e-4)

        i2i = dataclasses.replace(model, scheduler_config=discrete_config(model.scheduler_config, "img_to_img", False))
        out = model.unet(x, torch.tensor(600.0), encoder_hidden_states=emb).sample
        torch.testing.assert_close(KDenoiser(i2i, conds, [], POS, 1.0, torch.float32)(x, sigma), out,
                                   atol=1e-4, rtol=1e-4)

        lcm = dataclasses.replace(model, scheduler_config=discrete_config(model.scheduler_config, "lcm", False))
        lcm_table = _sigma_table(lcm.scheduler_config)
        np.testing.assert_allclose(lcm_table, table[19::20], rtol=1e-4)
        sigma = float(table[419]) * 1.01  # nearest of the 50: index 20 → UNet timestep 20 · 20 + 19
        eps = model.unet(x / math.sqrt(sigma ** 2 + 1), torch.tensor(419.0), encoder_hidden_states=emb).sample
        st = 4190.0
        expected = st / math.sqrt(st ** 2 + 0.25) * (x - sigma * eps) + 0.25 / (st ** 2 + 0.25) * x
        torch.testing.assert_close(KDenoiser(lcm, conds, [], POS, 1.0, torch.float32)(x, sigma), expected,
                                   atol=1e-4, rtol=1e-4)


def test_continuous_edm_denoiser_and_schedules(model):
    """ModelSamplingContinuousEDM: the UNet at 0.25·ln(sigma) on x/sqrt(sigma² + sd²), x0 read as v or EDM's F;
    ComfyUI's schedules over the log-spaced table, written out from its formulas."""
    from nodegraph.diffusion.model_sampling import continuous_config
    from nodegraph.diffusion.sigmas import model_schedule

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    emb = POS[0][0]
    conds = _conds(model, POS, 1, (64, 64), "cpu", torch.float32, "positive")
    sigma = 3.7
    with torch.no_grad():
        for sampling, sd, sign in (("v_prediction", 1.0, -1.0), ("edm", 0.5, 1.0)):
            patched = dataclasses.replace(model, scheduler_config=continuous_config(model.scheduler_config, sampling,
                                                                                    0.002, 120.0))
            out = model.unet(x / math.sqrt(sigma ** 2 + sd ** 2), torch.tensor(0.25 * math.log(sigma)),
                             encoder_hidden_states=emb).sample
            expected = x * sd ** 2 / (sigma ** 2 + sd ** 2) + sign * out * sigma * sd / math.sqrt(sigma ** 2 + sd ** 2)
            torch.testing.assert_close(KDenoiser(patched, conds, [], POS, 1.0, torch.float32)(x, sigma), expected,
                                       atol=1e-4, rtol=1e-4)
    table = _sigma_table(patched.scheduler_config)
    assert table[0] == pytest.approx(0.002) and table[-1] == pytest.approx(120.0) and len(table) == 1000
    normal = model_schedule(patched, "normal", 5, 1.0, SamplerRegistry()).double().numpy()
    np.testing.assert_allclose(normal[:-1], np.exp(np.linspace(math.log(120.0), math.log(0.002), 5)), rtol=1e-5)
    karras = model_schedule(patched, "karras", 5, 1.0, SamplerRegistry()).double().numpy()
    ramp = np.linspace(0, 1, 5)
    np.testing.assert_allclose(karras[:-1], (120.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 120.0 ** (1 / 7))) ** 7,
                               rtol=1e-5)
    simple = model_schedule(patched, "simple", 4, 1.0, SamplerRegistry()).double().numpy()
    np.testing.assert_allclose(simple[:-1], [table[-(1 + int(i * 250))] for i in range(4)], rtol=1e-5)
    with pytest.raises(ValueError, match="Playground v2.5"):
        continuous_config(model.scheduler_config, "edm_playground_v2.5", 0.002, 120.0)


def test_continuous_edm_node_samples(engine):
    wf = txt2img(steps=3, width=64, height=64)
    wf["edm"] = {"class_type": "ModelSamplingContinuousEDM", "inputs": {"model": ["ckpt", 0], "sampling": "v_prediction",
                                                                        "sigma_max": 120.0, "sigma_min": 0.002}}
    wf["ks"]["inputs"]["model"] = ["edm", 0]
    patched = _image(engine, wf)
    base = _image(engine, txt2img(steps=3, width=64, height=64))
    assert torch.isfinite(patched).all() and (patched - base).abs().max() > 1e-3
    wf["edm"]["inputs"]["sampling"] = "cosmos_rflow"
    result, _ = run(engine, wf)
    assert result.status == "error" and "Cosmos" in str(result.error)


# ---- guidance hooks in the three paths ---------------------------------------------------------------------------

def _one_step_expected(model, guide):
    """The output of one k-path Euler step from sigma_max to 0: the guided x0 at sigma_max, by hand."""
    table = _sigma_table(model.scheduler_config)
    sigma = float(table[-1])
    noise = make_noise((1, 4, 8, 8), torch.Generator("cpu").manual_seed(SEED))
    x = noise * sigma
    with torch.no_grad():
        def x0(cond):
            eps = model.unet(x / math.sqrt(sigma ** 2 + 1), torch.tensor(999.0), encoder_hidden_states=cond[0][0])
            return x - sigma * eps.sample
        return guide(x, sigma, x0) / model.latent.scaling_factor


def test_rescale_cfg_one_step_by_hand(model, devices):
    patched = P.with_patch(model, P.RescaleCFG(0.7))
    got = _run(patched, devices, "k_euler_test", steps=1, samplers=_k_table())
    expected = _one_step_expected(model, lambda x, s, x0: _vp_rescale(x, s, x0(POS), x0(NEG), 5.0, 0.7))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)  # float32 at sigma 14.6, over 0.18215
    plain = _run(model, devices, "k_euler_test", steps=1, samplers=_k_table())
    assert (plain - expected).abs().max() > 0.1


def test_perp_neg_one_step_by_hand(model, devices):
    patched = P.with_patch(model, P.PerpNeg(EMPTY, 0.8))
    got = _run(patched, devices, "k_euler_test", steps=1, samplers=_k_table())
    expected = _one_step_expected(model, lambda x, s, x0: P.perp_neg(x0(POS), x0(NEG), x0(EMPTY), 0.8, 5.0))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    plain = _run(model, devices, "k_euler_test", steps=1, samplers=_k_table())
    assert (plain - expected).abs().max() > 0.1


def test_latent_operation_cfg_one_step_by_hand(model, devices):
    """LatentApplyOperationCFG: the operation on cond - uncond, plus uncond, before plain CFG (ComfyUI's pre-cfg)."""
    def double(latent):
        return latent * 2.0

    patched = P.with_patch(model, P.LatentOperationCFG(double))
    got = _run(patched, devices, "k_euler_test", steps=1, samplers=_k_table())
    expected = _one_step_expected(model, lambda x, s, x0: x0(NEG) + 5.0 * 2.0 * (x0(POS) - x0(NEG)))
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=1e-3)
    plain = _run(model, devices, "k_euler_test", steps=1, samplers=_k_table())
    assert (plain - expected).abs().max() > 0.1
    torch.testing.assert_close(P.pre_cfg((P.LatentOperationCFG(double),), torch.ones(2), None), torch.full((2,), 2.0))


def test_fresca_filter_scales_low_and_high_frequencies_apart():
    from nodegraph.nodes.model_patches import FourierScale

    flat = torch.full((1, 4, 8, 8), 0.5)  # only the zero frequency (the centre after fftshift)
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 * 2.0 - 1.0  # only Nyquist
    checker = checker.expand(1, 4, 8, 8)
    op = FourierScale(0.5, 3.0, 2)
    torch.testing.assert_close(op(latent=flat), flat * 0.5)
    torch.testing.assert_close(op(latent=checker), checker * 3.0)
    torch.testing.assert_close(op(latent=flat + checker), flat * 0.5 + checker * 3.0)
    torch.testing.assert_close(FourierScale(2.0, 2.0, 3)(latent=checker + 0.1 * flat), 2 * (checker + 0.1 * flat))
    patch = P.LatentOperationCFG(op, guidance_only=True)
    assert P.pre_cfg((patch,), checker, None) is checker  # FreSca leaves a cfg-1 step alone
    torch.testing.assert_close(P.pre_cfg((patch,), checker + flat, flat), checker * 3.0 + flat)


def test_patches_act_in_the_diffusers_path(model, devices):
    """A no-op patch (RescaleCFG 0) gives plain CFG through the k-form round trip; a real one changes the image."""
    base = _run(model, devices, "dpmpp_2m")
    assert model.patches == ()
    torch.testing.assert_close(_run(P.with_patch(model, P.RescaleCFG(0.0)), devices, "dpmpp_2m"), base,
                               atol=1e-4, rtol=1e-4)
    for patch in (P.RescaleCFG(0.7), P.PerpNeg(EMPTY, 1.0), P.FreeU(1.3, 1.4, 0.9, 0.2, 2)):
        assert (_run(P.with_patch(model, patch), devices, "dpmpp_2m") - base).abs().max() > 1e-3, patch


def test_self_attention_guidance(model, devices):
    """SAG records the negative's middle-block attention ([heads, 4·4 tokens, 4·4]); scale 0 is plain CFG,
    another scale changes the result; the processor is restored."""
    attn = model.unet.mid_block.attentions[0].transformer_blocks[0].attn1
    before = attn.processor
    with install_sag_recorder(model.unet) as rec, torch.no_grad():
        model.unet(torch.randn(2, 4, 8, 8), torch.tensor(10.0), encoder_hidden_states=torch.cat([NEG[0][0],
                                                                                                POS[0][0]]))
        probs = rec.first(1)
    assert attn.processor is before
    assert probs.shape == (attn.heads, 16, 16)
    torch.testing.assert_close(probs.sum(-1), torch.ones(attn.heads, 16))
    latent = _latent(8)
    base = _run(model, devices, "euler", latent=latent)
    torch.testing.assert_close(_run(P.with_patch(model, P.SelfAttentionGuidance(0.0, 2.0)), devices, "euler",
                                    latent=latent), base, atol=1e-3, rtol=1e-3)  # explicit-softmax attention
    sag = _run(P.with_patch(model, P.SelfAttentionGuidance(1.0, 2.0)), devices, "euler", latent=latent)
    assert (sag - base).abs().max() > 1e-2


def test_sag_blur_map():
    x0 = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    everywhere = torch.full((2, 16, 16), 1.0 / 16) * 2  # each row sums to 2 > 1: blur everywhere
    torch.testing.assert_close(P.sag_blur(x0, everywhere, 2.0), P.gaussian_blur(x0, 9, 2.0))
    nowhere = torch.full((2, 16, 16), 1.0 / 16)  # rows sum to 1, not above the threshold
    torch.testing.assert_close(P.sag_blur(x0, nowhere, 2.0), x0)


def test_differential_diffusion_thresholds(model):
    """With the normal schedule's timesteps 999, 666, 333, 0 the thresholds are t / 999; a mask value passes at a
    step when it is at least the threshold."""
    table = _sigma_table(model.scheduler_config)
    active = P.Active((P.DifferentialDiffusion(1.0),), table)
    sigmas = [float(table[t]) for t in (999, 666, 333, 0)]
    active.begin(sigmas[0], 0.0)
    mask = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0]).view(1, 1, 1, 5)
    got = [active.mask(mask, s).flatten().tolist() for s in sigmas]
    expected = [[float(v >= t / 999) for v in (0.0, 0.3, 0.5, 0.7, 1.0)] for t in (999, 666, 333, 0)]
    assert got == expected
    half = P.Active((P.DifferentialDiffusion(0.5),), table)
    half.begin(sigmas[0], 0.0)
    torch.testing.assert_close(half.mask(mask, sigmas[1]), 0.5 * (mask >= 666 / 999).float() + 0.5 * mask)


def test_differential_diffusion_in_ksampler(model, devices):
    """A mask of ones is unchanged by DifferentialDiffusion; a soft mask gives another image than without it."""
    clean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    dd = P.with_patch(model, P.DifferentialDiffusion())
    ones = {"samples": clean, "noise_mask": torch.ones(1, 1, 8, 8)}
    torch.testing.assert_close(_run(dd, devices, "euler", latent=ones), _run(model, devices, "euler", latent=ones),
                               atol=1e-4, rtol=1e-4)
    ramp = {"samples": clean, "noise_mask": torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 1, 8, 8)}
    for sampler, table in (("euler", None), ("k_euler_test", _k_table())):
        assert (_run(dd, devices, sampler, latent=ramp, samplers=table)
                - _run(model, devices, sampler, latent=ramp, samplers=table)).abs().max() > 1e-3


# ---- the nodes, through graphs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _with_patch(wf: dict, node: dict) -> dict:
    wf["patch"] = node
    wf["op"] = {"class_type": "LatentOperationTonemapReinhard", "inputs": {"multiplier": 0.5}}
    wf["etxt"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "green square tree", "clip": ["ckpt", 1]}}
    for key in ("ks",):
        wf[key]["inputs"]["model"] = ["patch", 0]
    return wf


def _image(engine, wf):
    """The sampler's output latent (more sensitive than the tiny VAE's image)."""
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
    result, captured = run(engine, wf)
    result.raise_for_status()
    return captured["lat"]["samples"]


@pytest.mark.parametrize("node", [
    {"class_type": "RescaleCFG", "inputs": {"model": ["ckpt", 0], "multiplier": 0.7}},
    {"class_type": "FreeU", "inputs": {"model": ["ckpt", 0], "b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2}},
    {"class_type": "FreeU_V2", "inputs": {"model": ["ckpt", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}},
    {"class_type": "SelfAttentionGuidance", "inputs": {"model": ["ckpt", 0], "scale": 0.5, "blur_sigma": 2.0}},
    {"class_type": "PerpNeg", "inputs": {"model": ["ckpt", 0], "empty_conditioning": ["neg", 0], "neg_scale": 1.0}},
    {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "v_prediction",
                                                       "zsnr": True}},
    {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["ckpt", 0], "sampling": "lcm", "zsnr": False}},
    {"class_type": "TomePatchModel", "inputs": {"model": ["ckpt", 0], "ratio": 0.5}},
    {"class_type": "LatentApplyOperationCFG", "inputs": {"model": ["ckpt", 0], "operation": ["op", 0]}},
    {"class_type": "FreSca", "inputs": {"model": ["ckpt", 0], "scale_low": 1.0, "scale_high": 1.5,
                                        "freq_cutoff": 2}},
], ids=lambda n: n["class_type"] + ("_" + n["inputs"].get("sampling", "") if "sampling" in n["inputs"] else ""))
def test_nodes_change_the_image_and_leave_the_model(engine, node):
    base = _image(engine, txt2img(steps=2, width=64, height=64))
    patched = _image(engine, _with_patch(txt2img(steps=2, width=64, height=64), node))
    assert torch.isfinite(patched).all()
    assert (patched - base).abs().max() > 1e-4
    assert torch.equal(_image(engine, txt2img(steps=2, width=64, height=64)), base)  # nothing was mutated


def _custom_sampling(wf: dict) -> dict:
    """Sample ``wf`` with its "guider" node through SamplerCustomAdvanced (seed 1, euler, normal, 2 steps)."""
    wf["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
    wf["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    wf["sched"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                              "steps": 2, "denoise": 1.0}}
    wf["ks"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sched", 0],
        "latent_image": ["empty", 0]}}
    return wf


def test_perp_neg_guider_in_custom_sampling(engine):
    wf = txt2img(steps=2)
    wf["guider"] = {"class_type": "PerpNegGuider", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "empty_conditioning": ["neg", 0],
        "cfg": 5.0, "neg_scale": 1.0}}
    assert torch.isfinite(_image(engine, _custom_sampling(wf))).all()


def test_patch_through_cfg_guider(engine):
    """A patched MODEL acts under CFGGuider (custom sampling) too."""
    def graph(model_ref):
        wf = txt2img(steps=2)
        wf["patch"] = {"class_type": "RescaleCFG", "inputs": {"model": ["ckpt", 0], "multiplier": 1.0}}
        wf["guider"] = {"class_type": "CFGGuider", "inputs": {"model": model_ref, "positive": ["pos", 0],
                                                              "negative": ["neg", 0], "cfg": 7.0}}
        return _custom_sampling(wf)
    assert (_image(engine, graph(["patch", 0])) - _image(engine, graph(["ckpt", 0]))).abs().max() > 1e-4
