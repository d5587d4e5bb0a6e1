"""LTXVAddGuide / LTXVCropGuides by hand on the tiny LTX-Video: the guide's latent frames are appended with noise mask
1 - strength and kept through sampling, their tokens get the positions of the frames they guide (ComfyUI's
keyframe_idxs), and cropping gives the video latent back."""

from __future__ import annotations

import pytest
import torch
from ltx_tiny import CHECKPOINT, TEXT, build

from nodegraph.config import EngineConfig
from nodegraph.testing_graphs import capture_engine, run_captured

SIZE, LENGTH = 64, 17  # 3 latent frames of 2×2 cells


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from PIL import Image

    tiny = build(tmp_path_factory.mktemp("tiny-ltx-guides"))
    (tiny.home / "input").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(5)
    Image.fromarray((torch.rand(SIZE, SIZE, 3, generator=gen) * 255).byte().numpy()).save(tiny.home / "input" / "g.png")
    return tiny


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(frame_idx: int, strength: float = 1.0) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "ltxv"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["clip", 0]}},
        "load": {"class_type": "LoadImage", "inputs": {"image": "g.png"}},
        "empty": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": SIZE, "height": SIZE, "length": LENGTH,
                                                                   "batch_size": 1}},
        "guide": {"class_type": "LTXVAddGuide", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "latent": ["empty", 0],
            "image": ["load", 0], "frame_idx": frame_idx, "strength": strength}},
        "sched": {"class_type": "LTXVScheduler", "inputs": {"steps": 2, "max_shift": 2.05, "base_shift": 0.95,
                                                            "stretch": True, "terminal": 0.1,
                                                            "latent": ["guide", 2]}},
        "sel": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sc": {"class_type": "SamplerCustom", "inputs": {
            "model": ["ckpt", 0], "add_noise": True, "noise_seed": 3, "cfg": 3.0, "positive": ["guide", 0],
            "negative": ["guide", 1], "sampler": ["sel", 0], "sigmas": ["sched", 0], "latent_image": ["guide", 2]}},
        "crop": {"class_type": "LTXVCropGuides", "inputs": {"positive": ["guide", 0], "negative": ["guide", 1],
                                                            "latent": ["sc", 0]}},
        "g": {"class_type": "Capture", "inputs": {"value": ["guide", 2]}},
        "gp": {"class_type": "Capture", "inputs": {"value": ["guide", 0]}},
        "s": {"class_type": "Capture", "inputs": {"value": ["sc", 0]}},
        "c": {"class_type": "Capture", "inputs": {"value": ["crop", 2]}},
        "cp": {"class_type": "Capture", "inputs": {"value": ["crop", 0]}},
    }


def _run(engine, wf):
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


@pytest.mark.parametrize("frame_idx, frame", [(0, 0.0), (-1, 16.0), (8, 8.0)])
def test_a_guide_frame_is_appended_kept_and_cropped(engine, frame_idx, frame):
    cap = _run(engine, graph(frame_idx))
    guided = cap["g"]
    assert guided["samples"].shape == (1, 128, 4, 2, 2)  # 3 video frames + 1 guide frame
    assert guided["noise_mask"][0, 0, :, 0, 0].tolist() == [1.0, 1.0, 1.0, 0.0]
    keys = cap["gp"][0][1]["keyframe_idxs"]
    assert keys.shape == (1, 3, 4)
    assert keys[0, 0].tolist() == [frame] * 4  # one pixel frame: the causal first-frame position, then frame_idx
    assert keys[0, 1].tolist() == [0.0, 0.0, 32.0, 32.0] and keys[0, 2].tolist() == [0.0, 32.0, 0.0, 32.0]
    sampled = cap["s"]["samples"]
    assert torch.allclose(sampled[:, :, 3], guided["samples"][:, :, 3], atol=1e-5)  # the guide is kept
    assert cap["c"]["samples"].shape == (1, 128, 3, 2, 2)
    assert torch.equal(cap["c"]["samples"], sampled[:, :, :3])
    assert "keyframe_idxs" not in cap["cp"][0][1]


def test_guide_positions_matter(engine):
    """The guide tokens' positions come from keyframe_idxs: the same guide at another frame gives another video."""
    first = _run(engine, graph(0))
    last = _run(engine, graph(-1))
    assert float((first["c"]["samples"] - last["c"]["samples"]).abs().max()) > 1e-3


def test_a_clip_longer_than_the_video_is_refused(engine):
    wf = graph(9)  # 17 frames from frame 9: 2 latent frames from latent frame 2 of 3
    wf["load"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img0", 0], "amount": 17}}
    wf["img0"] = {"class_type": "LoadImage", "inputs": {"image": "g.png"}}
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception, match="exceed the video"):
        result.raise_for_status()
