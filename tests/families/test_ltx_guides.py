"""LTXVAddGuide / LTXVCropGuides by hand on the tiny LTX-Video: the guide's latent frames are appended with noise mask
1 - strength and kept through sampling, their tokens get the positions of the frames they guide (ComfyUI's
keyframe_idxs), and cropping gives the video latent back."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from ltx_tiny import CHECKPOINT, TEXT, build

SIZE, LENGTH = 64, 17  # 3 latent frames of 2×2 cells


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from PIL import Image

    tiny = build(tmp_path_factory.mktemp("tiny-ltx-guides"))
    (tiny.home / "input").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator("cpu").manual_seed(5)
    Image.fromarray((torch.rand(SIZE, SIZE, 3, generator=gen) * 255).byte().numpy()).save(tiny.home / "input" / "g.png")
    return tiny


engine = kit.engine_fixture("tiny")


def graph(frame_idx: int, strength: float = 1.0) -> dict:
    return {
        "ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "clip": kit.node("CLIPLoader", clip_name=TEXT, type="ltxv"),
        "pos": kit.encode("a red cat"),
        "neg": kit.encode("blue"),
        "load": kit.node("LoadImage", image="g.png"),
        "empty": kit.node("EmptyLTXVLatentVideo", width=SIZE, height=SIZE, length=LENGTH, batch_size=1),
        "guide": kit.node("LTXVAddGuide", positive=["pos", 0], negative=["neg", 0], vae=["ckpt", 2],
                          latent=["empty", 0],
                      image=["load", 0], frame_idx=frame_idx, strength=strength),
        "sched": kit.node("LTXVScheduler", steps=2, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                      latent=["guide", 2]),
        "sel": kit.node("KSamplerSelect", sampler_name="euler"),
        "sc": kit.node("SamplerCustom", model=["ckpt", 0], add_noise=True, noise_seed=3, cfg=3.0, positive=["guide", 0],
                   negative=["guide", 1], sampler=["sel", 0], sigmas=["sched", 0], latent_image=["guide", 2]),
        "crop": kit.node("LTXVCropGuides", positive=["guide", 0], negative=["guide", 1], latent=["sc", 0]),
        "g": kit.capture("guide", 2),
        "gp": kit.capture("guide"),
        "s": kit.capture("sc"),
        "c": kit.capture("crop", 2),
        "cp": kit.capture("crop"),
    }


@pytest.mark.parametrize("frame_idx, frame", [(0, 0.0), (-1, 16.0), (8, 8.0)])
def test_a_guide_frame_is_appended_kept_and_cropped(engine, frame_idx, frame):
    cap = kit.run(engine, graph(frame_idx))
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
    first = kit.run(engine, graph(0))
    last = kit.run(engine, graph(-1))
    assert kit.max_diff(first["c"]["samples"], last["c"]["samples"]) > 1e-3


def test_a_clip_longer_than_the_video_is_refused(engine):
    wf = graph(9)  # 17 frames from frame 9: 2 latent frames from latent frame 2 of 3
    wf["load"] = kit.node("RepeatImageBatch", image=["img0", 0], amount=17)
    wf["img0"] = kit.node("LoadImage", image="g.png")
    with pytest.raises(Exception, match="exceed the video"):
        kit.run(engine, wf)
