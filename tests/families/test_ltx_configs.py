"""LTX-Video detection and configs at full size (meta tensors, no weights), the refusals that name the fix, and
KSampler / ModelSamplingLTXV on the tiny model."""

from __future__ import annotations

import pytest
import torch
from ltx_tiny import CHECKPOINT, TEXT, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.detect import UnknownModelError
from nodegraph.diffusion.ltx.files import config_from_state, ltx_layout, shipped_config
from nodegraph.diffusion.ltx.vae import _config as vae_config
from nodegraph.testing_graphs import capture_engine, run_captured


def _meta_state(name: str) -> dict:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    with init_empty_weights():
        cls = LTXVideoTransformer3DModel if name.startswith("transformer") else AutoencoderKLLTXVideo
        return dict(cls.from_config(shipped_config(name)).state_dict())


@pytest.mark.parametrize("name", ["transformer_2b", "transformer_13b"])
def test_full_size_transformers_are_read_from_their_shapes(name):
    state = _meta_state(name)
    assert ltx_layout(state) == "diffusers"
    original = {"model.diffusion_model." + k.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single"):
                v for k, v in state.items()}
    assert ltx_layout(original) == "comfyui"
    assert config_from_state(state) == shipped_config(name)


def test_full_size_vae_0_9_0_is_read_from_its_shapes():
    state = _meta_state("vae_0.9.0")
    got = vae_config(state, "vae")
    want = shipped_config("vae_0.9.0")
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in got.items()} == want


def test_the_0_9_5_vae_is_refused_with_the_reason():
    state = {"encoder.conv_out.conv.weight": torch.empty(129, 2048, 3, 3, 3, device="meta"),
             "encoder.conv_in.conv.weight": torch.empty(128, 48, 3, 3, 3, device="meta"),
             "decoder.conv_in.conv.weight": torch.empty(1024, 128, 3, 3, 3, device="meta")}
    with pytest.raises(UnknownModelError, match="0.9.5"):
        vae_config(state, "ltx-video-2b-v0.9.5.safetensors")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    tiny = build(tmp_path_factory.mktemp("tiny-ltx-configs"))
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def _ksampler_graph(shift: bool) -> dict:
    wf = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "ltxv"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "empty": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9,
                                                                   "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 1, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }
    if shift:
        wf["msl"] = {"class_type": "ModelSamplingLTXV", "inputs": {"model": ["ckpt", 0], "max_shift": 2.05,
                                                                   "base_shift": 0.95, "latent": ["empty", 0]}}
        wf["ks"]["inputs"]["model"] = ["msl", 0]
    return wf


def test_ksampler_samples_an_ltx_model_and_model_sampling_ltxv_changes_it(engine):
    plain, cap = run_captured(engine, _ksampler_graph(False))
    plain.raise_for_status()
    shifted, cap2 = run_captured(engine, _ksampler_graph(True))
    shifted.raise_for_status()
    assert cap["img"].shape == (9, 64, 64, 3) and bool(torch.isfinite(cap["img"]).all())
    assert float((cap["img"] - cap2["img"]).abs().max()) > 1 / 255


def test_the_checkpoint_clip_says_to_load_t5(engine):
    wf = _ksampler_graph(False)
    wf["pos"]["inputs"]["clip"] = ["ckpt", 1]
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception, match="CLIPLoader type ltxv"):
        result.raise_for_status()
