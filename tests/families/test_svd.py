"""Stable Video Diffusion through our nodes equals diffusers: the single file (ComfyUI's/Stability's layout) loads
with the diffusers modules' weights, and ImageOnlyCheckpointLoader + LoadImage + SVD_img2vid_Conditioning +
VideoLinearCFGGuidance + KSampler (euler/karras) + VAEDecode gives StableVideoDiffusionPipeline's frames (Karras
sigmas 700 … 0.002, per-frame guidance from min to max) with the same noise, ≤ 1/255. SamplerCustomAdvanced equals
KSampler; the per-frame guidance shapes are ComfyUI's; ComfyUI_examples' video graphs validate with only the model
files missing and run on tiny files under their names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import family_kit as kit
import pytest
import torch
from svd_tiny import FILES, FRAMES, IMAGE, SIZE, build, start_image

from nodegraph.config import EngineConfig
from nodegraph.testing_graphs import capture_engine

SEED, STEPS, CFG = 5, 3, 2.5
EXAMPLES = sorted((Path(__file__).parent / "svd_examples").glob("*.json"))
FILE_INPUTS = {"ckpt_name", "image"}


tiny = kit.tiny_fixture(build, "tiny-svd-home")
engine = kit.engine_fixture("tiny")


def graph(size: int = SIZE, frames: int = FRAMES, steps: int = STEPS, cfg: float = CFG,
          guidance: str | None = "VideoLinearCFGGuidance", min_cfg: float = 1.0, motion: int = 127) -> dict:
    """ComfyUI's image-to-video graph (the example's nodes), frames captured as "frames", latent as "lat"."""
    wf = {
        "ckpt": kit.node("ImageOnlyCheckpointLoader", ckpt_name=FILES[0]),
        "img": kit.node("LoadImage", image=IMAGE),
        "cond": kit.node("SVD_img2vid_Conditioning", clip_vision=["ckpt", 1], init_image=["img", 0], vae=["ckpt", 2],
                     width=size, height=size, video_frames=frames, motion_bucket_id=motion, fps=7,
                     augmentation_level=0.0),
        "ks": kit.ksampler("ckpt" if guidance is None else "guide", SEED, steps, cfg, scheduler="karras",
                       positive=["cond", 0], negative=["cond", 1], latent=["cond", 2]),
        "dec": kit.decode(vae=["ckpt", 2]),
        "frames": kit.capture("dec"),
        "lat": kit.capture("ks"),
    }
    if guidance is not None:
        wf["guide"] = kit.node(guidance, model=["ckpt", 0], min_cfg=min_cfg)
    return wf


def test_file_loads_the_diffusers_weights(engine, tiny):
    cap = kit.run(engine, kit.add_captures({"ckpt": graph()["ckpt"]}, m=["ckpt", 0], cv=["ckpt", 1], v=["ckpt", 2]))
    model, vision, vae = kit.unwrap(cap["m"]), kit.unwrap(cap["cv"]), kit.unwrap(cap["v"])
    assert model.family == "svd" and model.arch == "svd" and model.prediction_type == "v_prediction"
    for ours, ref in ((model.unet, tiny.unet), (vae.vae.inner, tiny.vae), (vision.model, tiny.image_encoder)):
        kit.assert_same_weights(ours, ref)
    assert list(model.unet.config.block_out_channels) == list(tiny.unet.config.block_out_channels)


def test_checkpoint_loader_simple_reads_model_and_vae(engine, tiny):
    """As ComfyUI's CheckpointLoaderSimple: the file's MODEL and VAE, and a CLIP with no text encoder."""
    wf = {"ckpt": kit.node("CheckpointLoaderSimple", ckpt_name=FILES[1])}
    cap = kit.run(engine, kit.add_captures(wf, m=["ckpt", 0], c=["ckpt", 1], v=["ckpt", 2]))
    model, clip, vae = kit.unwrap(cap["m"]), kit.unwrap(cap["c"]), kit.unwrap(cap["v"])
    assert model.family == "svd" and clip.encoders == () and vae.vae.inner.config.latent_channels == 4
    assert torch.equal(model.unet.conv_in.weight, tiny.unet.conv_in.weight)


def test_image_only_checkpoint_save_writes_comfyuis_layout(tiny, tmp_path):
    """The saved file holds the UNet and VAE under the names written by hand in svd_tiny (Stability's), the CLIP
    vision tower in transformers' names under the embedder prefix (as ComfyUI saves it), and loads back."""
    from safetensors import safe_open
    from svd_tiny import single_file

    from nodegraph.diffusion.svd.files import VISION_PREFIX

    engine = capture_engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    kit.run(engine, {"ckpt": graph()["ckpt"], "save": kit.node("ImageOnlyCheckpointSave", model=["ckpt", 0],
                                                       clip_vision=["ckpt", 1], vae=["ckpt", 2],
                                                       filename_prefix="checkpoints/svd")})
    saved = list((tmp_path / "out").rglob("*.safetensors"))
    assert [p.name for p in saved] == ["svd_00001_.safetensors"]
    expected = {k: v for k, v in single_file(tiny.unet, tiny.vae, tiny.image_encoder).items()
                if not k.startswith(VISION_PREFIX)}
    with safe_open(str(saved[0]), framework="pt") as f:
        keys = set(f.keys())
        assert {k for k in keys if not k.startswith(VISION_PREFIX)} == set(expected) | {"v_pred"}
        assert all(torch.equal(f.get_tensor(k), v) for k, v in expected.items())
        assert f"{VISION_PREFIX}vision_model.embeddings.patch_embedding.weight" in keys
        assert json.loads(f.metadata()["prompt"])["save"]["class_type"] == "ImageOnlyCheckpointSave"
    shutil.copy(saved[0], EngineConfig(home=tiny.home).model_dir("checkpoints") / "resaved.safetensors")
    wf = {"ckpt": kit.node("ImageOnlyCheckpointLoader", ckpt_name="resaved.safetensors")}
    cap = kit.run(engine, kit.add_captures(wf, m=["ckpt", 0], cv=["ckpt", 1], v=["ckpt", 2]))
    for ours, ref in ((kit.unwrap(cap["m"]).unet, tiny.unet), (kit.unwrap(cap["v"]).vae.inner, tiny.vae),
                      (kit.unwrap(cap["cv"]).model, tiny.image_encoder)):
        kit.assert_same_weights(ours, ref)


def test_graph_frames_equal_svd_pipeline(engine, tiny):
    cap, took = kit.run_timed(engine, graph())
    frames = cap["frames"]
    noise = kit.seeded_noise((FRAMES, 4, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        ref = tiny.pipeline()(start_image(), height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                              min_guidance_scale=1.0, max_guidance_scale=CFG, fps=7, motion_bucket_id=127,
                              noise_aug_strength=0.0, decode_chunk_size=FRAMES, latents=noise[None],
                              output_type="pt").frames[0]
    ref = ref.permute(0, 2, 3, 1)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    kit.assert_parity(frames, ref, "SVD parity vs StableVideoDiffusionPipeline")
    print(f"SVD tiny graph {FRAMES}x{SIZE}px, {STEPS} steps: {took:.1f} s, peak RSS {kit.peak_rss_mib():.0f} MB")
    assert float(frames.std()) > 0.01


def test_per_frame_guidance_is_comfyuis():
    from nodegraph.diffusion.svd.guidance import VideoCFG

    assert torch.allclose(VideoCFG(1.0, "linear").scales(2.5, 3), torch.tensor([1.0, 1.75, 2.5]))
    assert torch.allclose(VideoCFG(1.0, "triangle").scales(2.5, 5), torch.tensor([1.0, 1.75, 2.5, 1.75, 1.0]))
    assert torch.allclose(VideoCFG(2.0, "triangle").scales(3.0, 1), torch.tensor([2.0]))


def test_guidance_and_conditioning_change_the_frames(engine):
    """The parity above would not see a wrong guidance shape or a dropped motion bucket if they did not matter."""
    small = {"size": 64, "steps": 2}
    base = kit.run(engine, graph(**small))["lat"]["samples"]
    assert base.shape == (FRAMES, 4, 8, 8)
    for wf in (graph(guidance="VideoTriangleCFGGuidance", **small), graph(guidance=None, **small),
               graph(motion=40, **small)):
        assert kit.max_diff(kit.run(engine, wf)["lat"]["samples"], base) > 1e-3
    # linear guidance from min_cfg = cfg is plain guidance at that cfg
    same = kit.run(engine, graph(guidance="VideoLinearCFGGuidance", min_cfg=CFG, **small))["lat"]["samples"]
    plain = kit.run(engine, graph(guidance=None, **small))["lat"]["samples"]
    assert torch.allclose(same, plain, atol=1e-5)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler (SVD's EDM sigmas) + CFGGuider + KSamplerSelect + SamplerCustomAdvanced equals KSampler."""
    wf = graph(size=64, steps=2)
    wf.update({
        "sched": kit.node("BasicScheduler", model=["guide", 0], scheduler="karras", steps=2, denoise=1.0),
        "guider": kit.node("CFGGuider", model=["guide", 0], positive=["cond", 0], negative=["cond", 1], cfg=CFG),
        "sampler": kit.node("KSamplerSelect", sampler_name="euler"),
        "noise": kit.node("RandomNoise", noise_seed=SEED),
        "adv": kit.node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                    sigmas=["sched", 0], latent_image=["cond", 2]),
    })
    cap = kit.run(engine, kit.add_captures(wf, sig="sched", custom="adv"))
    sigmas = cap["sig"]
    assert float(sigmas[0]) == pytest.approx(700.0, rel=1e-5) and float(sigmas[1]) == pytest.approx(0.002, rel=1e-4)
    assert float(sigmas[-1]) == 0.0
    assert torch.allclose(cap["custom"]["samples"], cap["lat"]["samples"], atol=1e-5)


def test_sigma_settings_are_comfyuis():
    from nodegraph.diffusion.flow.schedule import flow_sigmas
    from nodegraph.diffusion.svd.sampling import SVDSigmas

    flow = SVDSigmas()
    assert flow.percent_to_sigma(0.5) == pytest.approx((0.002 * 700.0) ** 0.5, rel=1e-6)
    simple = flow_sigmas("simple", 4, flow)
    assert simple[0] == pytest.approx(700.0) and simple[-1] == 0.0
    normal = flow_sigmas("normal", 3, flow)  # linear in ComfyUI's timestep 0.25·ln(sigma)
    assert normal[1] == pytest.approx((0.002 * 700.0) ** 0.5, rel=1e-6)
    from types import SimpleNamespace

    from nodegraph.diffusion.flow.schedule import FlowSettings
    from nodegraph.diffusion.sigmas import percent_to_sigma

    svd = SimpleNamespace(family="svd", flow=flow)  # SamplingPercentToSigma's return_actual_sigma
    assert percent_to_sigma(svd, 0.0, actual=True) == pytest.approx(700.0)
    assert percent_to_sigma(svd, 1.0, actual=True) == pytest.approx(0.002)
    flux = SimpleNamespace(family="flux", flow=FlowSettings("flux", 1.15, 1.0))
    assert percent_to_sigma(flux, 0.0, actual=True) == pytest.approx(1.0)
    assert percent_to_sigma(flux, 1.0, actual=True) == pytest.approx(float(flux.flow.sigma(1e-4)), rel=1e-6)


def test_wrong_inputs_are_clear(engine, tiny):
    from safetensors.torch import save_file

    from nodegraph.diffusion.svd.sampling import SVDDenoiser

    checkpoints = kit.home_config(tiny.home).model_dir("checkpoints")
    save_file({"foo.weight": torch.zeros(2)}, str(checkpoints / "junk.safetensors"))
    wf = {"ckpt": kit.node("ImageOnlyCheckpointLoader", ckpt_name="junk.safetensors"), "m": kit.capture("ckpt")}
    with pytest.raises(Exception, match="not a Stable Video Diffusion checkpoint"):
        kit.run(engine, wf)
    model = kit.unwrap(kit.run(engine, {"ckpt": graph()["ckpt"], "m": kit.capture("ckpt")})["m"])
    with pytest.raises(ValueError, match="SVD_img2vid_Conditioning"):  # e.g. a CLIPTextEncode output
        SVDDenoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu", FRAMES, (8, 8))
    from nodegraph._tiny import build_tiny_sd

    build_tiny_sd(tiny.home)  # per-frame guidance on an image model would be ignored: refused with the fix
    wf = {"ckpt": kit.node("CheckpointLoaderSimple", ckpt_name="tiny-sd"),
          "guide": kit.node("VideoTriangleCFGGuidance", model=["ckpt", 0], min_cfg=1.0), "m": kit.capture("guide")}
    with pytest.raises(Exception, match="Stable Video Diffusion models"):
        kit.run(engine, wf)


def test_examples_validate_but_for_missing_files(tmp_path):
    """The model files and the start image are missing here."""
    checked, _, _ = kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path)
    assert len(checked) == 2


def _small(prompt: dict) -> dict:
    return kit.shrink(prompt, {"SVD_img2vid_Conditioning": {"width": 64, "height": 64, "video_frames": 2},
                           "EmptyLatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})


@pytest.mark.parametrize("example", ["image_to_video", "txt_to_image_to_video"])
def test_examples_run_on_tiny_files(tiny, tmp_path, example):
    from PIL import Image

    if example == "txt_to_image_to_video":  # its first half is SDXL: a tiny SDXL under the example's name
        from nodegraph._tiny import build_tiny_sdxl

        home = tmp_path / "home"
        shutil.copytree(tiny.home, home)
        build_tiny_sdxl(home)
        checkpoints = EngineConfig(home=home).model_dir("checkpoints")
        shutil.copy(checkpoints / "tiny-sdxl.safetensors", checkpoints / "sd_xl_1.0.safetensors")
    else:
        home = tiny.home
    prompt = _small(kit.load_example(Path(__file__).parent / "svd_examples" / f"{example}.json"))
    decoded = next(k for k, n in prompt.items() if n["class_type"] == "VAEDecode" and n["inputs"]["samples"][0] == "3")
    prompt["cv"] = {"class_type": "CreateVideo", "inputs": {"images": [decoded, 0], "fps": 6.0}}
    prompt["sv"] = {"class_type": "SaveVideo", "inputs": {"video": ["cv", 0], "filename_prefix": "svd",
                                                          "format": "auto", "codec": "auto"}}
    kit.run_example(home, tmp_path / "out", prompt)
    clips = list((tmp_path / "out").rglob("*.webp"))
    assert len(clips) == 1
    with Image.open(clips[0]) as clip:
        assert clip.size == (64, 64) and clip.n_frames == 2
    import av

    videos = list((tmp_path / "out").rglob("*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (64, 64)


@pytest.mark.parametrize("part,count", [("unet", 1_524_623_082), ("vae", 97_742_847)])
def test_shipped_configs_have_the_published_sizes(part, count):
    """SVD/SVD-XT's UNet (Stability AI: a 1.5B-parameter video model; diffusers' unet 1,524,623,082) and VAE (SD's
    encoder + temporal decoder); full-size tensor names in Stability's layout (on the meta device) are converted and
    detected back to the shipped config."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from svd_tiny import unet_to_sgm, vae_to_sgm

    from nodegraph.diffusion.svd import files

    shipped = files.shipped_config(part)
    factory = UNetSpatioTemporalConditionModel if part == "unet" else AutoencoderKLTemporalDecoder
    model = kit.on_meta(lambda: factory.from_config(shipped))
    assert kit.parameter_count(model) == count
    state = model.state_dict()
    if part == "unet":
        attends = [t.startswith("CrossAttn") for t in shipped["down_block_types"]]
        converted = files.convert_unet(unet_to_sgm(state, 4, 2, attends))
        derived = files.unet_config(converted)
    else:
        converted = files.convert_vae(vae_to_sgm(state, 4))
        derived = files.vae_config(converted)
    assert set(converted) == set(state)
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in derived.items()} == \
        {k: list(v) if isinstance(v, tuple) else v for k, v in shipped.items()}
