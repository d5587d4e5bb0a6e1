"""LTX-Video detection and configs at full size (meta tensors, no weights), the refusals that name the fix, and
KSampler / ModelSamplingLTXV on the tiny model."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from ltx_tiny import CHECKPOINT, TEXT, build

from nodegraph.diffusion.ltx.files import config_from_state, ltx_layout, shipped_config
from nodegraph.diffusion.ltx.vae import _config as vae_config


def _meta_state(name: str) -> dict:
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    cls = LTXVideoTransformer3DModel if name.startswith("transformer") else AutoencoderKLLTXVideo
    return dict(kit.on_meta(lambda: cls.from_config(shipped_config(name))).state_dict())


@pytest.mark.parametrize("name", ["transformer_2b", "transformer_13b"])
def test_full_size_transformers_are_read_from_their_shapes(name):
    state = _meta_state(name)
    assert ltx_layout(state) == "diffusers"
    original = {"model.diffusion_model." + k.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single"):
                v for k, v in state.items()}
    assert ltx_layout(original) == "comfyui"
    assert config_from_state(state) == shipped_config(name)


@pytest.mark.parametrize("name", ["vae_0.9.0", "vae_0.9.5"])
def test_full_size_vaes_are_read_from_their_shapes(name):
    got = vae_config(_meta_state(name), "vae")
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()} == shipped_config(name)


def test_a_timestep_conditioned_vae_decodes_as_diffusers_with_comfyui_decode_settings():
    """A tiny 0.9.5-structured VAE (diffusers layout): weights read from the shapes, and our decode equals diffusers'
    at ComfyUI's decode timestep 0.05 with 2.5 % of the fixed-seed noise."""
    from diffusers import AutoencoderKLLTXVideo

    from nodegraph.diffusion.ltx.vae import (
        DECODE_NOISE,
        DECODE_TIMESTEP,
        ltx_vae_from_state,
    )

    torch.manual_seed(0)
    ref = AutoencoderKLLTXVideo(
        latent_channels=128, block_out_channels=(4, 8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 2, 1, 1, 1), decoder_layers_per_block=(1, 2, 1, 1), down_block_types=(
            "LTXVideo095DownBlock3D",) * 4, spatio_temporal_scaling=(True,) * 4,
        decoder_spatio_temporal_scaling=(True,) * 3, decoder_inject_noise=(False,) * 4,
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"), upsample_residual=(True,) * 3,
        upsample_factor=(2,) * 3, timestep_conditioning=True, spatial_compression_ratio=32,
        temporal_compression_ratio=8).eval()
    with torch.no_grad():
        ref.latents_mean.copy_(torch.randn(128) * 0.1)
        ref.latents_std.copy_(torch.rand(128) + 0.5)
    vae = ltx_vae_from_state({k: v.clone() for k, v in ref.state_dict().items()}, "tiny-0.9.5")
    got_state = vae.vae.inner.state_dict()
    assert all(torch.equal(got_state[k], v) for k, v in ref.state_dict().items())
    z = torch.randn(1, 128, 2, 2, 2)
    with torch.no_grad():
        ours = vae.vae.decode(z).sample
        raw = z * ref.latents_std.view(1, -1, 1, 1, 1) + ref.latents_mean.view(1, -1, 1, 1, 1)
        noise = torch.randn(raw.shape, generator=torch.Generator("cpu").manual_seed(0))
        raw = (1 - DECODE_NOISE) * raw + DECODE_NOISE * noise
        want = ref.decode(raw, torch.tensor([DECODE_TIMESTEP])).sample.movedim(2, 1).flatten(0, 1)
    assert ours.shape == (9, 3, 64, 64)
    assert torch.allclose(ours, want, atol=1e-5)
    # the decode timestep matters: at 0 the frames differ
    with torch.no_grad():
        other = ref.decode(raw, torch.tensor([0.0])).sample.movedim(2, 1).flatten(0, 1)
    assert float((other - want).abs().max()) > 1e-4


tiny = kit.tiny_fixture(build, "tiny-ltx-configs")
engine = kit.engine_fixture("tiny")


def _ksampler_graph(shift: bool) -> dict:

    wf = {
        "ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="ltxv"),
        "pos": kit.encode("a red cat"),
        "neg": kit.encode(""),
        "empty": kit.node("EmptyLTXVLatentVideo", width=64, height=64, length=9, batch_size=1),
        "ks": kit.ksampler("ckpt", 1, 3, 3.0),
        "dec": kit.decode(vae=["ckpt", 2]),
        "img": kit.capture("dec"),
    }
    if shift:
        wf["msl"] = kit.node("ModelSamplingLTXV", model=["ckpt", 0], max_shift=2.05, base_shift=0.95,
                         latent=["empty", 0])
        wf["ks"]["inputs"]["model"] = ["msl", 0]
    return wf


def test_ksampler_samples_an_ltx_model_and_model_sampling_ltxv_changes_it(engine):
    cap = kit.run(engine, _ksampler_graph(False))
    cap2 = kit.run(engine, _ksampler_graph(True))
    assert cap["img"].shape == (9, 64, 64, 3) and bool(torch.isfinite(cap["img"]).all())
    assert kit.max_diff(cap["img"], cap2["img"]) > 1 / 255


def test_the_checkpoint_clip_says_to_load_t5(engine):
    wf = _ksampler_graph(False)
    wf["pos"]["inputs"]["clip"] = ["ckpt", 1]
    with pytest.raises(Exception, match="CLIPLoader type ltxv"):
        kit.run(engine, wf)
