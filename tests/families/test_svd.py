"""Stable Video Diffusion through our nodes equals diffusers: the single file (ComfyUI's/Stability's layout) loads
with the diffusers modules' weights, and ImageOnlyCheckpointLoader + LoadImage + SVD_img2vid_Conditioning +
VideoLinearCFGGuidance + KSampler (euler/karras) + VAEDecode gives StableVideoDiffusionPipeline's frames (Karras
sigmas 700 … 0.002, per-frame guidance from min to max) with the same noise, ≤ 1/255. SamplerCustomAdvanced equals
KSampler; the per-frame guidance shapes are ComfyUI's; ComfyUI_examples' video graphs validate with only the model
files missing and run on tiny files under their names."""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path

import pytest
import torch
from svd_tiny import FILES, FRAMES, IMAGE, SIZE, TinySVD, build, start_image

from nodegraph.config import EngineConfig
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

SEED, STEPS, CFG = 5, 3, 2.5
EXAMPLES = sorted((Path(__file__).parent / "svd_examples").glob("*.json"))
FILE_INPUTS = {"ckpt_name", "image"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinySVD:
    return build(tmp_path_factory.mktemp("tiny-svd-home"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(size: int = SIZE, frames: int = FRAMES, steps: int = STEPS, cfg: float = CFG,
          guidance: str | None = "VideoLinearCFGGuidance", min_cfg: float = 1.0, motion: int = 127) -> dict:
    """ComfyUI's image-to-video graph (the example's nodes), frames captured as "frames", latent as "lat"."""
    model = ["ckpt", 0] if guidance is None else ["guide", 0]
    wf = {
        "ckpt": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": FILES[0]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": IMAGE}},
        "cond": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
            "clip_vision": ["ckpt", 1], "init_image": ["img", 0], "vae": ["ckpt", 2], "width": size, "height": size,
            "video_frames": frames, "motion_bucket_id": motion, "fps": 7, "augmentation_level": 0.0}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": SEED, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "karras",
            "positive": ["cond", 0], "negative": ["cond", 1], "latent_image": ["cond", 2], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "frames": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "lat": {"class_type": "Capture", "inputs": {"value": ["ks", 0]}},
    }
    if guidance is not None:
        wf["guide"] = {"class_type": guidance, "inputs": {"model": ["ckpt", 0], "min_cfg": min_cfg}}
    return wf


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


def test_file_loads_the_diffusers_weights(engine, tiny):
    wf = {"ckpt": graph()["ckpt"], **{k: {"class_type": "Capture", "inputs": {"value": ["ckpt", i]}}
                                       for i, k in enumerate(("m", "cv", "v"))}}
    cap = _run(engine, wf)
    model, vision, vae = _get(cap["m"]), _get(cap["cv"]), _get(cap["v"])
    assert model.family == "svd" and model.arch == "svd" and model.prediction_type == "v_prediction"
    for ours, ref in ((model.unet, tiny.unet), (vae.vae.inner, tiny.vae), (vision.model, tiny.image_encoder)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert list(model.unet.config.block_out_channels) == list(tiny.unet.config.block_out_channels)


def test_checkpoint_loader_simple_reads_model_and_vae(engine, tiny):
    """As ComfyUI's CheckpointLoaderSimple: the file's MODEL and VAE, and a CLIP with no text encoder."""
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": FILES[1]}},
          **{k: {"class_type": "Capture", "inputs": {"value": ["ckpt", i]}} for i, k in enumerate(("m", "c", "v"))}}
    cap = _run(engine, wf)
    model, clip, vae = _get(cap["m"]), _get(cap["c"]), _get(cap["v"])
    assert model.family == "svd" and clip.encoders == () and vae.vae.inner.config.latent_channels == 4
    assert torch.equal(model.unet.conv_in.weight, tiny.unet.conv_in.weight)


def test_image_only_checkpoint_save_writes_comfyuis_layout(tiny, tmp_path):
    """The saved file holds the UNet and VAE under the names written by hand in svd_tiny (Stability's), the CLIP
    vision tower in transformers' names under the embedder prefix (as ComfyUI saves it), and loads back."""
    from safetensors import safe_open
    from svd_tiny import single_file

    from nodegraph.diffusion.svd.files import VISION_PREFIX

    engine = capture_engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    _run(engine, {"ckpt": graph()["ckpt"], "save": {"class_type": "ImageOnlyCheckpointSave", "inputs": {
        "model": ["ckpt", 0], "clip_vision": ["ckpt", 1], "vae": ["ckpt", 2], "filename_prefix": "checkpoints/svd"}}})
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
    wf = {"ckpt": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "resaved.safetensors"}},
          **{k: {"class_type": "Capture", "inputs": {"value": ["ckpt", i]}} for i, k in enumerate(("m", "cv", "v"))}}
    cap = _run(engine, wf)
    for ours, ref in ((_get(cap["m"]).unet, tiny.unet), (_get(cap["v"]).vae.inner, tiny.vae),
                      (_get(cap["cv"]).model, tiny.image_encoder)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)


def test_graph_frames_equal_svd_pipeline(engine, tiny):
    start = time.perf_counter()
    frames = _run(engine, graph())["frames"]
    took = time.perf_counter() - start
    noise = make_noise((FRAMES, 4, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    with torch.no_grad():
        ref = tiny.pipeline()(start_image(), height=SIZE, width=SIZE, num_frames=FRAMES, num_inference_steps=STEPS,
                              min_guidance_scale=1.0, max_guidance_scale=CFG, fps=7, motion_bucket_id=127,
                              noise_aug_strength=0.0, decode_chunk_size=FRAMES, latents=noise[None],
                              output_type="pt").frames[0]
    ref = ref.permute(0, 2, 3, 1)
    assert frames.shape == ref.shape == (FRAMES, SIZE, SIZE, 3)
    diff = float((frames - ref).abs().max())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"SVD parity: max |ours - StableVideoDiffusionPipeline| = {diff:.2e} (limit {1 / 255:.2e}); tiny graph "
          f"{FRAMES}x{SIZE}px, {STEPS} steps: {took:.1f} s, peak RSS {peak:.0f} MB")
    assert diff <= 1 / 255
    assert float(frames.std()) > 0.01


def test_per_frame_guidance_is_comfyuis():
    from nodegraph.diffusion.svd.guidance import VideoCFG

    assert torch.allclose(VideoCFG(1.0, "linear").scales(2.5, 3), torch.tensor([1.0, 1.75, 2.5]))
    assert torch.allclose(VideoCFG(1.0, "triangle").scales(2.5, 5), torch.tensor([1.0, 1.75, 2.5, 1.75, 1.0]))
    assert torch.allclose(VideoCFG(2.0, "triangle").scales(3.0, 1), torch.tensor([2.0]))


def test_guidance_and_conditioning_change_the_frames(engine):
    """The parity above would not see a wrong guidance shape or a dropped motion bucket if they did not matter."""
    small = {"size": 64, "steps": 2}
    base = _run(engine, graph(**small))["lat"]["samples"]
    assert base.shape == (FRAMES, 4, 8, 8)
    for wf in (graph(guidance="VideoTriangleCFGGuidance", **small), graph(guidance=None, **small),
               graph(motion=40, **small)):
        assert float((_run(engine, wf)["lat"]["samples"] - base).abs().max()) > 1e-3
    # linear guidance from min_cfg = cfg is plain guidance at that cfg
    same = _run(engine, graph(guidance="VideoLinearCFGGuidance", min_cfg=CFG, **small))["lat"]["samples"]
    plain = _run(engine, graph(guidance=None, **small))["lat"]["samples"]
    assert torch.allclose(same, plain, atol=1e-5)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler (SVD's EDM sigmas) + CFGGuider + KSamplerSelect + SamplerCustomAdvanced equals KSampler."""
    wf = graph(size=64, steps=2)
    wf.update({
        "sched": {"class_type": "BasicScheduler", "inputs": {"model": ["guide", 0], "scheduler": "karras",
                                                              "steps": 2, "denoise": 1.0}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["guide", 0], "positive": ["cond", 0],
                                                          "negative": ["cond", 1], "cfg": CFG}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": SEED}},
        "adv": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sched", 0],
            "latent_image": ["cond", 2]}},
        "sig": {"class_type": "Capture", "inputs": {"value": ["sched", 0]}},
        "custom": {"class_type": "Capture", "inputs": {"value": ["adv", 0]}},
    })
    cap = _run(engine, wf)
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

    checkpoints = EngineConfig(home=tiny.home).model_dir("checkpoints")
    save_file({"foo.weight": torch.zeros(2)}, str(checkpoints / "junk.safetensors"))
    wf = {"ckpt": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "junk.safetensors"}},
          "m": {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}}}
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception, match="not a Stable Video Diffusion checkpoint"):
        result.raise_for_status()
    model = _get(_run(engine, {"ckpt": graph()["ckpt"],
                               "m": {"class_type": "Capture", "inputs": {"value": ["ckpt", 0]}}})["m"])
    with pytest.raises(ValueError, match="SVD_img2vid_Conditioning"):  # e.g. a CLIPTextEncode output
        SVDDenoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu", FRAMES, (8, 8))
    from nodegraph._tiny import build_tiny_sd

    build_tiny_sd(tiny.home)  # per-frame guidance on an image model would be ignored: refused with the fix
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
          "guide": {"class_type": "VideoTriangleCFGGuidance", "inputs": {"model": ["ckpt", 0], "min_cfg": 1.0}},
          "m": {"class_type": "Capture", "inputs": {"value": ["guide", 0]}}}
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception, match="Stable Video Diffusion models"):
        result.raise_for_status()


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["prompt"]


def test_examples_validate_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    assert len(EXAMPLES) == 2
    for path in EXAMPLES:
        with pytest.raises(ValidationReport) as info:  # the model files and the start image are missing here
            engine.prepare(_prompt(path))
        for node_id, entry in info.value.node_errors.items():
            for error in entry["errors"]:
                assert error["type"] == "value_not_in_list" and \
                    error["extra_info"].get("input_name") in FILE_INPUTS, (path.name, node_id, error)


def _small(prompt: dict) -> dict:
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "SVD_img2vid_Conditioning":
            inputs.update(width=64, height=64, video_frames=2)
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            inputs.update(steps=2)
    return prompt


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
    prompt = _small(_prompt(Path(__file__).parent / "svd_examples" / f"{example}.json"))
    decoded = next(k for k, n in prompt.items() if n["class_type"] == "VAEDecode" and n["inputs"]["samples"][0] == "3")
    prompt["cv"] = {"class_type": "CreateVideo", "inputs": {"images": [decoded, 0], "fps": 6.0}}
    prompt["sv"] = {"class_type": "SaveVideo", "inputs": {"video": ["cv", 0], "filename_prefix": "svd",
                                                          "format": "auto", "codec": "auto"}}
    engine = Engine(EngineConfig(home=home, output_dir=tmp_path / "out"))
    engine.run(engine.prepare(prompt)).raise_for_status()
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
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from svd_tiny import unet_to_sgm, vae_to_sgm

    from nodegraph.diffusion.svd import files

    shipped = files.shipped_config(part)
    factory = UNetSpatioTemporalConditionModel if part == "unet" else AutoencoderKLTemporalDecoder
    with init_empty_weights():
        model = factory.from_config(shipped)
    assert sum(p.numel() for p in model.parameters()) == count
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
