"""Wan nodes and loaders on their own: the empty video latent's shape, trimming, errors that name the fix (image
latent into a Wan KSampler, a UMT5 file without vocabulary), the tokenizer folder beside the file, and a video
latent's VAEDecode giving the frames as an IMAGE batch."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from wan_tiny import LAYOUTS, TEXT, VAE_FILES, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.video_models.wan_text import load_umt5
from nodegraph.testing_graphs import capture_engine, run_captured


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tiny-wan-nodes"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def _run(engine, wf: dict):
    return run_captured(engine, wf)


def test_empty_latent_and_trim(engine):
    wf = {"e": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 832, "height": 480, "length": 25,
                                                                    "batch_size": 2}},
          "t": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["e", 0], "trim_amount": 3}},
          "c1": {"class_type": "Capture", "inputs": {"value": ["e", 0]}},
          "c2": {"class_type": "Capture", "inputs": {"value": ["t", 0]}}}
    result, cap = _run(engine, wf)
    result.raise_for_status()
    assert tuple(cap["c1"]["samples"].shape) == (2, 16, 7, 60, 104)
    assert tuple(cap["c2"]["samples"].shape) == (2, 16, 4, 60, 104)


def _sampler_graph(latent: dict) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": LAYOUTS["comfyui"], "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "wan"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["clip", 0]}},
        "lat": latent,
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["pos", 0], "negative": ["pos", 0], "latent_image": ["lat", 0], "denoise": 1.0}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILES["comfyui"]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


def test_image_latent_into_a_wan_sampler_names_the_fix(engine):
    wf = _sampler_graph({"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}})
    result, _ = _run(engine, wf)
    with pytest.raises(Exception, match="EmptyHunyuanLatentVideo"):
        result.raise_for_status()


def test_video_latent_decodes_to_frames(engine):
    wf = _sampler_graph({"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 48, "height": 32,
                                                                             "length": 9, "batch_size": 2}})
    result, cap = _run(engine, wf)
    result.raise_for_status()
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
    wf = {"lat": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 128, "height": 64, "length": 5,
                                                                      "batch_size": 1}},
          "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILES["comfyui"]}},
          "dec": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["lat", 0], "vae": ["vae", 0],
                                                             "tile_size": 64, "overlap": 16, "temporal_size": 64,
                                                             "temporal_overlap": 8}},
          "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}}
    result, cap = _run(engine, wf)
    result.raise_for_status()
    assert cap["img"].shape == (5, 64, 128, 3)


def test_custom_sampling_equals_ksampler(engine):
    """SamplerCustomAdvanced (CFGGuider, BasicScheduler simple, euler, RandomNoise) on Wan = KSampler's latent."""
    base = _sampler_graph({"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32,
                                                                               "length": 5, "batch_size": 1}})
    base["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}}
    base["ks"]["inputs"].update(cfg=3.0, negative=["neg", 0], steps=3)
    base["klat"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
    base.update({
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["unet", 0], "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "cfg": 3.0}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["unet", 0], "scheduler": "simple",
                                                              "steps": 3, "denoise": 1.0}},
        "custom": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["lat", 0]}},
        "clat": {"class_type": "Capture", "inputs": {"value": ["custom", 0]}},
        "cden": {"class_type": "Capture", "inputs": {"value": ["custom", 1]}}})
    result, cap = _run(engine, base)
    result.raise_for_status()
    got, want = cap["clat"]["samples"], cap["klat"]["samples"]
    assert got.shape == want.shape == (1, 16, 2, 4, 4)
    assert float((got - want).abs().max()) < 1e-5
    assert cap["cden"]["samples"].shape == got.shape
