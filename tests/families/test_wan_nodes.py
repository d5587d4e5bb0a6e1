"""Wan nodes and loaders on their own: the empty video latent's shape, trimming, errors that name the fix (image
latent into a Wan KSampler, a UMT5 file without vocabulary), the tokenizer folder beside the file, and a video
latent's VAEDecode giving the frames as an IMAGE batch."""

from __future__ import annotations

import shutil

import family_kit as kit
import pytest
import torch
from safetensors.torch import load_file, save_file
from wan_tiny import LAYOUTS, TEXT, VAE_FILES, build

from nodegraph.diffusion.video_models.wan_text import load_umt5

tiny = kit.tiny_fixture(build, "tiny-wan-nodes")
engine = kit.engine_fixture("tiny")


def _video(width: int, height: int, length: int, batch: int = 1) -> dict:
    return kit.node("EmptyHunyuanLatentVideo", width=width, height=height, length=length, batch_size=batch)


def test_empty_latent_and_trim(engine):
    wf = {"e": _video(832, 480, 25, 2), "t": kit.node("TrimVideoLatent", samples=["e", 0], trim_amount=3)}
    cap = kit.run(engine, kit.add_captures(wf, c1="e", c2="t"))
    assert tuple(cap["c1"]["samples"].shape) == (2, 16, 7, 60, 104)
    assert tuple(cap["c2"]["samples"].shape) == (2, 16, 4, 60, 104)


def _sampler_graph(latent: dict) -> dict:
    return {
        "unet": kit.unet_loader(LAYOUTS["comfyui"]),
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="wan"),
        "pos": kit.encode("a cat"),
        "lat": latent,
        "ks": kit.ksampler("unet", 1, 2, 1.0, negative=["pos", 0], latent=["lat", 0]),
        "vae": kit.node("VAELoader", vae_name=VAE_FILES["comfyui"]),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


def test_image_latent_into_a_wan_sampler_names_the_fix(engine):
    wf = _sampler_graph(kit.node("EmptyLatentImage", width=32, height=32, batch_size=1))
    with pytest.raises(Exception, match="EmptyHunyuanLatentVideo"):
        kit.run(engine, wf)


def test_video_latent_decodes_to_frames(engine):
    cap = kit.run(engine, _sampler_graph(_video(48, 32, 9, 2)))
    frames = cap["img"]
    assert frames.shape == (2 * 9, 32, 48, 3) and frames.dtype == torch.float32
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0


def test_umt5_without_vocabulary_names_the_fix(tiny, tmp_path):
    state = load_file(str(tiny.home / "models" / "text_encoders" / TEXT))
    spiece = state.pop("spiece_model")
    bare = tmp_path / "umt5-bare.safetensors"
    save_file(state, str(bare))
    with pytest.raises(Exception, match="umt5_tokenizer"):
        load_umt5(bare, bare.name)
    folder = tmp_path / "umt5_tokenizer"
    folder.mkdir()
    (folder / "spiece.model").write_bytes(bytes(spiece.numpy().tobytes()))
    tokenizer, model = load_umt5(bare, bare.name)
    assert tokenizer("a cat").input_ids == tiny.tokenizer("a cat").input_ids
    assert torch.equal(model.shared.weight, tiny.text_encoder.shared.weight)


def test_t5_file_is_not_a_wan_text_encoder(tiny, tmp_path):
    state = load_file(str(tiny.home / "models" / "text_encoders" / TEXT))
    t5_like = {k: v for k, v in state.items() if "relative_attention_bias" not in k or ".block.0." in k}
    path = tmp_path / "t5.safetensors"
    save_file(t5_like, str(path))
    with pytest.raises(Exception, match="UMT5"):
        load_umt5(path, path.name)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_tiled_decode_settings_are_diffusers_wan_tiling(tiny):
    """VAEDecodeTiled's tile attributes map onto AutoencoderKLWan's own spatial tiling (equal frames)."""
    import copy

    from nodegraph.diffusion.video_models.wan_vae import wan_vae_from_state

    vae = wan_vae_from_state(load_file(str(tiny.home / "models" / "vae" / VAE_FILES["comfyui"])), "v").vae
    z = torch.randn((1, 16, 2, 8, 16), generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(tiny.vae)
    reference.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=48,
                            tile_sample_stride_width=48)
    with torch.no_grad():
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = True, 64, 8, 0.25
        assert (vae.inner.tile_sample_stride_width, vae.tile_latent_min_size, vae.tile_overlap_factor) == (48, 8, 0.25)
        tiled = vae.decode(z).sample
        want = reference.decode(z).sample.movedim(2, 1).flatten(0, 1)
    assert tiled.shape == (5, 3, 64, 128)
    assert torch.equal(tiled, want)


def test_vae_decode_tiled_node_on_a_video_latent(engine):
    wf = {"lat": _video(128, 64, 5), "vae": kit.node("VAELoader", vae_name=VAE_FILES["comfyui"]),
          "dec": kit.node("VAEDecodeTiled", samples=["lat", 0], vae=["vae", 0], tile_size=64, overlap=16,
                      temporal_size=64, temporal_overlap=8),
          "img": kit.capture("dec")}
    cap = kit.run(engine, wf)
    assert cap["img"].shape == (5, 64, 128, 3)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
def test_custom_sampling_equals_ksampler(engine, sampler):
    """SamplerCustomAdvanced (CFGGuider, BasicScheduler simple, RandomNoise) on Wan = KSampler's latent; an
    ancestral sampler takes its rectified-flow form on both paths (the Wan denoiser declares its noise form)."""
    base = _sampler_graph(_video(32, 32, 5))
    base["neg"] = kit.encode("")
    base["ks"]["inputs"].update(cfg=3.0, negative=["neg", 0], steps=3, sampler_name=sampler)
    base.update({
        "noise": kit.node("RandomNoise", noise_seed=1),
        "guider": kit.node("CFGGuider", model=["unet", 0], positive=["pos", 0], negative=["neg", 0], cfg=3.0),
        "sampler": kit.node("KSamplerSelect", sampler_name=sampler),
        "sigmas": kit.node("BasicScheduler", model=["unet", 0], scheduler="simple", steps=3, denoise=1.0),
        "custom": kit.node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                       sigmas=["sigmas", 0], latent_image=["lat", 0])})
    cap = kit.run(engine, kit.add_captures(base, klat="ks", clat="custom", cden=["custom", 1]))
    got, want = cap["clat"]["samples"], cap["klat"]["samples"]
    assert got.shape == want.shape == (1, 16, 2, 4, 4)
    assert float((got - want).abs().max()) < 1e-5
    assert cap["cden"]["samples"].shape == got.shape
