"""LTX latent upsamplers (LatentUpscaleModelLoader → LTXVLatentUpsampler) against diffusers.

Tiny random-weight upsamplers are saved as Lightricks/ComfyUI files (the tensor names of ComfyUI's
``comfy.ldm.lightricks.latent_upsampler.LatentUpsampler``, which are diffusers' names too, and the ``config`` metadata
ComfyUI reads) and load with weights equal to diffusers'; LTXVLatentUpsampler equals ``LTXLatentUpsamplePipeline``
(LTX-Video) and ``LTX2LatentUpsamplePipeline`` (LTX-2, rational resampler) on latents (≤ 1e-5) and decoded frames
(≤ 1/255); a two-pass graph doubles the frames' size; ComfyUI's LTX-2 two-stage templates validate with only the
model files missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ltx_tiny import CHECKPOINT, TEXT, build
from safetensors.torch import save_file

from nodegraph.api import Node, Output, String
from nodegraph.config import EngineConfig
from nodegraph.diffusion.detect import UnknownModelError
from nodegraph.diffusion.ltx.upsampler import (
    CONFIG_NAMES,
    build_empty,
    config_from_shapes,
    load_latent_upscale_model,
    parameter_counts,
    shipped_config,
    upsample_latent,
)
from nodegraph.testing_graphs import capture_engine, run_captured

MID = 32  # GroupNorm(32) needs a multiple of 32
#: name → (diffusers class, config, ComfyUI's metadata config or None)
TINY = {
    "spatial": ("LTXLatentUpsamplerModel", {"mid_channels": MID, "num_blocks_per_stage": 1},
                {"in_channels": 128, "mid_channels": MID, "num_blocks_per_stage": 1, "dims": 3,
                 "spatial_upsample": True, "temporal_upsample": False}),
    "temporal": ("LTXLatentUpsamplerModel", {"mid_channels": MID, "num_blocks_per_stage": 1,
                                             "spatial_upsample": False, "temporal_upsample": True}, None),
    "rational2": ("LTX2LatentUpsamplerModel", {"mid_channels": MID, "num_blocks_per_stage": 1},
                  {"in_channels": 128, "mid_channels": MID, "num_blocks_per_stage": 1, "dims": 3,
                   "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 2.0,
                   "rational_resampler": True}),
    "rational1.5": ("LTX2LatentUpsamplerModel", {"mid_channels": MID, "num_blocks_per_stage": 1,
                                                 "rational_spatial_scale": 1.5},
                    {"in_channels": 128, "mid_channels": MID, "num_blocks_per_stage": 1, "dims": 3,
                     "spatial_upsample": True, "temporal_upsample": False, "spatial_scale": 1.5,
                     "rational_resampler": True}),
}


def _tiny_upsampler(kind: str):
    from diffusers.pipelines.ltx.modeling_latent_upsampler import (
        LTXLatentUpsamplerModel,
    )
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    cls_name, config, _ = TINY[kind]
    cls = {"LTXLatentUpsamplerModel": LTXLatentUpsamplerModel, "LTX2LatentUpsamplerModel": LTX2LatentUpsamplerModel}
    torch.manual_seed(1)
    model = cls[cls_name](in_channels=128, **config).eval()
    with torch.no_grad():  # non-trivial norms, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny LTX-Video plus tiny upsamplers in models/latent_upscale_models (as Lightricks ships them)."""
    ltx = build(tmp_path_factory.mktemp("ltx-upsampler-home"))
    folder = ltx.home / "models" / "latent_upscale_models"
    folder.mkdir(parents=True, exist_ok=True)
    models = {}
    for kind, (_, _, meta) in TINY.items():
        models[kind] = _tiny_upsampler(kind)
        state = {k: v.contiguous().clone() for k, v in models[kind].state_dict().items()}
        save_file(state, str(folder / f"{kind}.safetensors"), metadata={"config": json.dumps(meta)} if meta else None)
    return ltx, models


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny[0].home)
    cfg.ensure_dirs()
    return capture_engine(cfg, extra_nodes=(FixedLatent,))


_FIXED: dict[str, torch.Tensor] = {}


class FixedLatent(Node):
    """A test LATENT: the tensor stored under ``key``."""

    INPUTS = {"key": String("")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, key: str):
        return ({"samples": _FIXED[key].clone(), "downscale": 32, "noise_mask": torch.ones(1)},)


@pytest.mark.slow
def test_shipped_configs_are_read_from_their_shapes_and_counted():
    counts = parameter_counts()
    assert counts == {"ltxv_spatial_x2_0.9.7": 126_250_624, "ltx2_spatial_x2_1.0": 497_867_904}
    for name in CONFIG_NAMES:
        shapes = {k: tuple(v.shape) for k, v in build_empty(shipped_config(name)).state_dict().items()}
        assert config_from_shapes(shapes, name) == shipped_config(name)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_tiny_upsamplers_load_with_diffusers_weights(tiny, kind):
    ltx, models = tiny
    loaded = load_latent_upscale_model(ltx.home / "models" / "latent_upscale_models" / f"{kind}.safetensors")
    assert type(loaded.model).__name__ == TINY[kind][0]
    got, want = loaded.model.state_dict(), models[kind].state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert loaded.spatial == {"spatial": 2.0, "temporal": 1.0, "rational2": 2.0, "rational1.5": 1.5}[kind]
    assert loaded.temporal == (kind == "temporal")


def test_refusals_name_the_fix(tmp_path):
    hunyuan = tmp_path / "hunyuanvideo15_latent_upsampler_1080p.safetensors"
    save_file({"up.0.block.0.conv1.conv.weight": torch.zeros(1), "conv_in.conv.weight": torch.zeros(1)}, str(hunyuan))
    with pytest.raises(UnknownModelError, match="HunyuanVideo 1.5"):
        load_latent_upscale_model(hunyuan)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(1)}, str(other))
    with pytest.raises(UnknownModelError, match="latent_upscale_models"):
        load_latent_upscale_model(other)
    pickle = tmp_path / "up.pt"
    pickle.write_bytes(b"x")
    with pytest.raises(UnknownModelError, match="safetensors only"):
        load_latent_upscale_model(pickle)


def _latent(frames: int = 2, size: int = 3) -> torch.Tensor:
    return torch.randn(1, 128, frames, size, size, generator=torch.Generator().manual_seed(3))


def _graph(kind: str, key: str) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "up": {"class_type": "LatentUpscaleModelLoader", "inputs": {"model_name": f"{kind}.safetensors"}},
        "lat": {"class_type": "FixedLatent", "inputs": {"key": key}},
        "ups": {"class_type": "LTXVLatentUpsampler", "inputs": {"samples": ["lat", 0], "upscale_model": ["up", 0],
                                                                "vae": ["ckpt", 2]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ups", 0], "vae": ["ckpt", 2]}},
        "out": {"class_type": "Capture", "inputs": {"value": ["ups", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


@pytest.mark.slow
def test_ltxv_latent_upsampler_equals_ltx_latent_upsample_pipeline(tiny, engine):
    from diffusers import LTXLatentUpsamplePipeline

    ltx, models = tiny
    _FIXED["p1"] = _latent()
    result, cap = run_captured(engine, _graph("spatial", "p1"))
    result.raise_for_status()
    pipe = LTXLatentUpsamplePipeline(vae=ltx.vae, latent_upsampler=models["spatial"])
    with torch.no_grad():
        want = pipe(latents=_FIXED["p1"].clone(), height=96, width=96, output_type="latent").frames
        frames = pipe(latents=_FIXED["p1"].clone(), height=96, width=96, output_type="pt").frames
    got = cap["out"]["samples"]
    assert got.shape == (1, 128, 2, 6, 6) and "noise_mask" not in cap["out"]
    print(f"\nLTX upsampler vs LTXLatentUpsamplePipeline: latents {float((got - want).abs().max()):.2e}, "
          f"frames {float((cap['img'] - frames[0].permute(0, 2, 3, 1)).abs().max()) * 255:.3f}/255")
    assert float((got - want).abs().max()) <= 1e-5
    want_img = frames[0].permute(0, 2, 3, 1).float()  # [F, H, W, 3] in 0..1
    assert cap["img"].shape == want_img.shape == (9, 192, 192, 3)
    assert float((cap["img"] - want_img).abs().max()) <= 1 / 255


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rational2", "rational1.5", "temporal"])
def test_upsampling_equals_ltx2_latent_upsample_pipeline(tiny, kind):
    """LTX-2's rational resampler (and a temporal model) through our loader and upsampling, on an LTX-2 VAE."""
    from diffusers import AutoencoderKLLTX2Video
    from diffusers.pipelines.ltx2.pipeline_ltx2_latent_upsample import (
        LTX2LatentUpsamplePipeline,
    )
    from ltx2_tiny import VIDEO_VAE

    from nodegraph.diffusion.ltx.vae import LTXVideoVAE

    ltx, models = tiny
    torch.manual_seed(5)
    vae = AutoencoderKLLTX2Video(**VIDEO_VAE).eval()
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(128) * 0.1)
        vae.latents_std.copy_(torch.rand(128) + 0.5)
    loaded = load_latent_upscale_model(ltx.home / "models" / "latent_upscale_models" / f"{kind}.safetensors")
    latent = _latent(size=4)
    got = upsample_latent(loaded, LTXVideoVAE(vae), latent)
    pipe = LTX2LatentUpsamplePipeline(vae=vae, latent_upsampler=models[kind]) if kind != "temporal" else None
    if pipe is None:  # diffusers' LTX-2 pipeline takes its LTX2 model class only: the same steps, by hand
        mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
        with torch.no_grad():
            raw = models[kind](latent * std + mean)
    else:
        with torch.no_grad():
            raw = pipe(latents=latent.clone(), latents_normalized=True, height=128, width=128,
                       output_type="latent").frames
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    want = (raw - mean) / std
    assert got.shape == want.shape == loaded.out_shape(tuple(latent.shape))
    print(f"\n{kind} vs diffusers: {float((got - want).abs().max()):.2e}")
    assert float((got - want).abs().max()) <= 1e-5


@pytest.mark.slow
def test_two_pass_graph_doubles_the_frames(engine):
    """EmptyLTXVLatentVideo → KSampler → LTXVLatentUpsampler → KSampler (denoise 0.5) → VAEDecode."""
    sample = {"model": ["ckpt", 0], "seed": 1, "steps": 2, "cfg": 3.0, "sampler_name": "euler",
              "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0]}
    wf = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": TEXT, "type": "ltxv", "device": "default"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "empty": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 64, "height": 64, "length": 9,
                                                                   "batch_size": 1}},
        "ks1": {"class_type": "KSampler", "inputs": dict(sample, latent_image=["empty", 0], denoise=1.0)},
        "up": {"class_type": "LatentUpscaleModelLoader", "inputs": {"model_name": "spatial.safetensors"}},
        "ups": {"class_type": "LTXVLatentUpsampler", "inputs": {"samples": ["ks1", 0], "upscale_model": ["up", 0],
                                                                "vae": ["ckpt", 2]}},
        "ks2": {"class_type": "KSampler", "inputs": dict(sample, latent_image=["ups", 0], denoise=0.5)},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks2", 0], "vae": ["ckpt", 2]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    assert cap["img"].shape == (9, 128, 128, 3) and bool(torch.isfinite(cap["img"]).all())


def test_upsampler_refuses_a_wrong_vae_and_latent(engine):
    _FIXED["img"] = torch.zeros(1, 4, 8, 8)
    wf = _graph("spatial", "img")
    result, _ = run_captured(engine, wf)
    assert result.status == "error" and "not an LTX video latent" in str(result.error)
    folder = engine.config.home / "models" / "latent_upscale_models"
    upscaler = load_latent_upscale_model(folder / "spatial.safetensors")
    with pytest.raises(ValueError, match="not an LTX-Video or LTX-2 VAE"):
        upsample_latent(upscaler, torch.nn.Identity(), _latent())


#: video_ltx2_i2v_lora is left out: its subgraph output names a link (265) the file lacks, so SaveVideo gets no video
TEMPLATES = ("video_ltx2_t2v_distilled", "video_ltx2_t2v")


def _template(name: str) -> dict:
    templates = pytest.importorskip("comfyui_workflow_templates_json")
    path = Path(templates.__file__).parent / "templates" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{name} is not in this comfyui_workflow_templates_json")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", TEMPLATES)
def test_ltx2_two_stage_templates_validate_but_for_missing_files(tmp_path, name):
    from nodegraph.engine import Engine
    from nodegraph.ui_format import ui_to_api
    from nodegraph.validation import ValidationReport

    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = ui_to_api(_template(name), engine.registry)
    assert "LTXVLatentUpsampler" in {n["class_type"] for n in prompt.values()}
    with pytest.raises(ValidationReport) as info:  # the model files and the start image are missing here
        engine.prepare(prompt)
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            assert error["type"] == "value_not_in_list", (name, node_id, error)
