"""SkipLayerGuidanceDiT / SkipLayerGuidanceDiTSimple on the tiny Flux and Wan models: skipped blocks pass their inputs
through, one guided evaluation equals ComfyUI's formula built from plain evaluations, nothing changes outside the
percent range, and graphs with each node run and differ from the plain graph."""

from __future__ import annotations

import family_kit as kit
import pytest
import test_flux_parity as flux_graphs
import test_wan_parity as wan_graphs
import torch
from flux_tiny import LAYOUTS as FLUX_LAYOUTS
from wan_tiny import build as build_wan

from nodegraph.diffusion.block_skip import (
    SkipLayerGuidanceDiT,
    SkipLayerGuidanceDiTSimple,
    parse_layers,
    skipped_blocks,
    wired,
)
from nodegraph.diffusion.flow.sampling import FlowDenoiser
from nodegraph.diffusion.patches import with_patch
from nodegraph.diffusion.video_models.wan_sampling import WanDenoiser

tiny_wan = kit.tiny_fixture(build_wan, "tiny-wan-slg-home")
flux_engine = kit.engine_fixture("tiny_flux")
wan_engine = kit.engine_fixture("tiny_wan")
CFG = 3.0


def _flux_graph() -> dict:
    wf = flux_graphs.graph(FLUX_LAYOUTS["comfyui"])
    wf["ks"]["inputs"]["cfg"] = CFG
    return wf


@pytest.fixture(scope="module")
def flux_parts(flux_engine):
    """(model, positive, negative, x) of the tiny Flux graph."""
    cap = kit.run(flux_engine, kit.add_captures(_flux_graph(), shifted="msf", p="guide", n="neg"))
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    return kit.unwrap(cap["shifted"]), cap["p"], cap["n"], x


@pytest.fixture(scope="module")
def wan_parts(wan_engine):
    """(model, positive, negative, x) of the tiny Wan graph."""
    cap = kit.run(wan_engine, kit.add_captures(wan_graphs.graph(), shifted="msd3", p="pos", n="neg"))
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    return kit.unwrap(cap["shifted"]), cap["p"], cap["n"], x


def _denoiser(kind: str, model, pos, neg):
    cls = FlowDenoiser if kind == "flux" else WanDenoiser
    return cls(model, pos, neg, CFG, torch.float32, torch.device("cpu"))


def test_parse_layers_reads_digit_runs():
    assert parse_layers("7, 8,9") == (7, 8, 9) and parse_layers("") == () and parse_layers("a") == ()


def test_wired_families():
    assert all(wired(f) for f in ("flux", "sd3", "chroma", "wan", "qwen_image", "flux2"))
    assert not any(wired(f) for f in ("ltxv", "z_image", "lumina2", "svd", "sd15", ""))


def test_flux_blocks_pass_through_and_are_restored(flux_parts):
    transformer = flux_parts[0].unet
    g = torch.Generator().manual_seed(0)
    hs, enc = torch.randn(1, 16, 64, generator=g), torch.randn(1, 8, 64, generator=g)
    temb = torch.randn(1, 64, generator=g)
    rot = transformer.pos_embed(torch.zeros(24, 3))
    double, single = transformer.transformer_blocks[0], transformer.single_transformer_blocks[1]
    with torch.no_grad():
        plain = double(hs, enc, temb, rot)
        with skipped_blocks(transformer, (0,), (1,)):
            skip_d = double(hidden_states=hs, encoder_hidden_states=enc, temb=temb, image_rotary_emb=rot)
            skip_s = single(hs, enc, temb, rot)
            other = transformer.single_transformer_blocks[0](hs, enc, temb, rot)
        after = double(hs, enc, temb, rot)
    assert skip_d[0] is enc and skip_d[1] is hs and skip_s[0] is enc and skip_s[1] is hs
    assert not torch.equal(other[1], hs)  # block 0 of the single list still runs
    assert not torch.equal(plain[1], hs) and torch.equal(after[1], plain[1])
    assert "forward" not in vars(double) and "forward" not in vars(single)


def test_wan_blocks_pass_through_and_are_restored(wan_parts):
    transformer = wan_parts[0].unet
    block = transformer.blocks[1]
    with skipped_blocks(transformer, (1, 99), (0,)):  # no single list on Wan; 99 is past the end
        hs = torch.randn(1, 8, 32)
        assert block(hs, torch.randn(1, 4, 32), torch.randn(1, 6, 32), None) is hs
    assert "forward" not in vars(block)


def _expected(plain, x, sigma, skip, simple: bool, scale: float = 2.0, rescale: float = 0.0):
    cond, uncond = plain.split(x, sigma)
    with skipped_blocks(plain.transformer, *skip):
        skipped_cond, skipped_uncond = plain.split(x, sigma)
    if simple:
        return skipped_uncond + CFG * (cond - skipped_uncond)
    out = uncond + CFG * (cond - uncond) + (cond - skipped_cond) * scale
    if rescale:
        out = out * (rescale * cond.std() / out.std() + 1.0 - rescale)
    return out


@pytest.mark.parametrize("kind", ["flux", "wan"])
@torch.no_grad()
def test_one_evaluation_equals_comfyui_formula(kind, flux_parts, wan_parts):
    model, pos, neg, x = flux_parts if kind == "flux" else wan_parts
    skip = ((0,), (1,)) if kind == "flux" else ((1,), ())
    sigma = 0.5
    plain = _denoiser(kind, model, pos, neg)
    base = plain(x, sigma)
    cases = [(SkipLayerGuidanceDiT(*skip, 2.0, 0.0, 1.0, 0.0), {"simple": False}),
             (SkipLayerGuidanceDiT(*skip, 2.0, 0.0, 1.0, 0.7), {"simple": False, "rescale": 0.7}),
             (SkipLayerGuidanceDiTSimple(*skip, 0.0, 1.0), {"simple": True})]
    for patch, how in cases:
        ours = _denoiser(kind, with_patch(model, patch), pos, neg)(x, sigma)
        want = _expected(plain, x, sigma, skip, **how)
        assert torch.allclose(ours, want, atol=1e-5), (patch, kit.max_diff(ours, want))
        assert kit.max_diff(ours, base) > 1e-4, patch  # the skipped blocks matter
    # outside [start, end] (sigma 0.5 is not within percents 0.9..1.0, i.e. sigmas near 0) nothing changes
    for patch in (SkipLayerGuidanceDiT(*skip, 2.0, 0.9, 1.0, 0.0), SkipLayerGuidanceDiTSimple(*skip, 0.9, 1.0)):
        assert torch.equal(_denoiser(kind, with_patch(model, patch), pos, neg)(x, sigma), base)


def _with_node(wf: dict, source: str, sampler_model_from: str, node: dict) -> dict:
    wf["slg"] = node
    wf[sampler_model_from]["inputs"]["model"] = ["slg", 0]
    return wf


def test_graphs_with_each_node_run_and_differ(flux_engine, wan_engine):
    flux_plain = kit.run(flux_engine, _flux_graph())["img"]
    wan_plain = kit.run(wan_engine, wan_graphs.graph())["img"]
    for class_type, extra in (("SkipLayerGuidanceDiT", {"scale": 3.0, "rescaling_scale": 0.0}),
                              ("SkipLayerGuidanceDiTSimple", {})):
        node = kit.node(class_type, model=["msf", 0], double_layers="0", single_layers="1", start_percent=0.0,
                        end_percent=1.0, **extra)
        img = kit.run(flux_engine, _with_node(_flux_graph(), "msf", "ks", node))["img"]
        assert img.shape == flux_plain.shape and kit.max_diff(img, flux_plain) > 1 / 255, class_type
        node = dict(node, inputs=dict(node["inputs"], model=["msd3", 0], double_layers="1", single_layers=""))
        frames = kit.run(wan_engine, _with_node(wan_graphs.graph(), "msd3", "ks", node))["img"]
        assert frames.shape == wan_plain.shape and kit.max_diff(frames, wan_plain) > 1 / 255, class_type


def test_empty_layers_leave_the_model_alone(flux_engine):
    wf = _with_node(_flux_graph(), "msf", "ks",
                    kit.node("SkipLayerGuidanceDiTSimple", model=["msf", 0], double_layers="", single_layers=" ",
                             start_percent=0.0, end_percent=1.0))
    cap = kit.run(flux_engine, kit.add_captures({k: v for k, v in wf.items() if k not in ("ks", "dec", "img")},
                                                patched="slg"))
    assert not kit.unwrap(cap["patched"]).patches


def test_unwired_denoisers_and_unknown_blocks_are_refused(flux_parts):
    import types

    from nodegraph.diffusion.block_skip import dit_slg_patches

    model, pos, neg, _ = flux_parts
    patch = SkipLayerGuidanceDiTSimple((0,), (), 0.0, 1.0)

    class OwnGuidance(FlowDenoiser):  # a family denoiser that replaces FlowDenoiser's guidance
        def __call__(self, x, sigma):
            return x

    with pytest.raises(ValueError, match="not wired for flux models"):
        OwnGuidance(with_patch(model, patch), pos, neg, CFG, torch.float32, torch.device("cpu"))
    fake = types.SimpleNamespace(transformer_blocks=torch.nn.ModuleList([torch.nn.Linear(2, 2)]))
    with pytest.raises(ValueError, match="hidream model's blocks cannot be skipped.*Linear"):
        dit_slg_patches((patch,), fake, "hidream")
    assert dit_slg_patches((), fake, "hidream") == ()


sd_engine = kit.engine_fixture("tiny_checkpoint")


@pytest.mark.parametrize("class_type", ["SkipLayerGuidanceDiT", "SkipLayerGuidanceDiTSimple"])
def test_node_refuses_a_family_it_does_not_run_on(sd_engine, tiny_checkpoint, class_type):
    wf = {"ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=tiny_checkpoint.name),
          "slg": kit.node(class_type, model=["ckpt", 0], double_layers="1", single_layers="", start_percent=0.0,
                          end_percent=1.0, **({"scale": 3.0, "rescaling_scale": 0.0}
                                              if class_type == "SkipLayerGuidanceDiT" else {})),
          "out": kit.capture("slg")}
    error = kit.run_error(sd_engine, wf)
    assert f"{class_type} is not supported on unet models" in error and "remove the node" in error
