"""SaveLatent/LoadLatent (ComfyUI's .latent files), tiled VAE passes and InpaintModelConditioning on the tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from graphs import make_engine, run
from safetensors import safe_open
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _cap(engine, wf):
    result, cap = run(engine, wf)
    result.raise_for_status()
    return result, cap


def _image(h: int = 96, w: int = 128) -> torch.Tensor:
    """A smooth test image [1, H, W, 3] (gradients and a disc), deterministic."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.08).float()
    return torch.stack([x, y, disc], -1).unsqueeze(0)


def _with_image(engine, wf: dict, name: str = "src.png") -> list:
    from PIL import Image

    pixels = (_image() * 255).round().byte()[0].numpy()
    engine.config.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(engine.config.input_dir / name)
    wf["load"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    return ["load", 0]


def test_save_and_load_latent_round_trip(engine):
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}}
    image = _with_image(engine, wf)
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": image, "vae": ["ckpt", 2]}}
    wf["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["enc", 0], "filename_prefix": "latents/test"}}
    wf["lat"] = {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}
    result, cap = _cap(engine, wf)
    (entry,) = result.outputs["save"]["latents"]
    assert entry["subfolder"] == "latents" and entry["filename"].endswith("_.latent") and entry["type"] == "output"
    path = engine.config.outputs_dir / "latents" / entry["filename"]
    with safe_open(str(path), "pt") as f:  # ComfyUI's layout: the tensor, the version marker, the prompt
        assert set(f.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert set(json.loads(f.metadata()["prompt"])) == set(wf)
    shutil.copy(path, engine.config.input_dir / "again.latent")
    load = {"load": {"class_type": "LoadLatent", "inputs": {"latent": "again.latent"}},
            "out": {"class_type": "Capture", "inputs": {"value": ["load", 0]}}}
    _, cap2 = _cap(engine, load)
    assert torch.equal(cap2["out"]["samples"], cap["lat"]["samples"])
    # A file from before the marker holds scaled latents: ComfyUI divides them by 0.18215.
    save_file({"latent_tensor": (cap["lat"]["samples"] * 0.18215).contiguous()}, str(engine.config.input_dir / "old.latent"))
    load["load"]["inputs"]["latent"] = "old.latent"
    _, cap3 = _cap(engine, load)
    assert torch.allclose(cap3["out"]["samples"], cap["lat"]["samples"], rtol=1e-5, atol=1e-6)


def test_load_latent_refuses_other_files_with_the_fix(engine):
    save_file({"x": torch.zeros(1)}, str(engine.config.input_dir / "wrong.latent"))
    result, _ = run(engine, {"load": {"class_type": "LoadLatent", "inputs": {"latent": "wrong.latent"}},
                             "out": {"class_type": "Capture", "inputs": {"value": ["load", 0]}}})
    assert "latent_tensor" in str(result.error) and "SaveLatent" in str(result.error)


def test_tiled_passes_match_whole_ones_within_a_tile_and_blend_across_tiles(engine):
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}}}
    image = _with_image(engine, wf)
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": image, "vae": ["ckpt", 2]}}
    wf["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["ckpt", 2]}}
    for name, tile in (("big", 4096), ("small", 64)):
        wf[f"tenc_{name}"] = {"class_type": "VAEEncodeTiled", "inputs": {
            "pixels": image, "vae": ["ckpt", 2], "tile_size": tile, "overlap": 32, "temporal_size": 64,
            "temporal_overlap": 8}}
        wf[f"tdec_{name}"] = {"class_type": "VAEDecodeTiled", "inputs": {
            "samples": ["enc", 0], "vae": ["ckpt", 2], "tile_size": tile, "overlap": 32, "temporal_size": 64,
            "temporal_overlap": 8}}
        wf[f"ce_{name}"] = {"class_type": "Capture", "inputs": {"value": [f"tenc_{name}", 0]}}
        wf[f"cd_{name}"] = {"class_type": "Capture", "inputs": {"value": [f"tdec_{name}", 0]}}
    wf["ce"] = {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}
    wf["cd"] = {"class_type": "Capture", "inputs": {"value": ["dec", 0]}}
    _, cap = _cap(engine, wf)
    z, img = cap["ce"]["samples"], cap["cd"]
    # One tile covers the image: exactly the plain pass.
    assert torch.equal(cap["ce_big"]["samples"], z) and torch.equal(cap["cd_big"], img)
    # Tiles of 64 pixels: same shapes, different numbers (each tile is its own pass), close after blending.
    small_z, small_img = cap["ce_small"]["samples"], cap["cd_small"]
    assert small_z.shape == z.shape and small_img.shape == img.shape
    assert not torch.equal(small_img, img) and not torch.equal(small_z, z)
    assert (small_img - img).abs().mean() < 0.1
    # The tiling settings were restored on the shared model: a plain decode after the tiled ones is unchanged.
    again = {k: v for k, v in wf.items() if k in ("ckpt", "load", "enc", "dec", "cd")}
    _, cap2 = _cap(engine, again)
    assert torch.equal(cap2["cd"], img)


def test_inpaint_model_conditioning(engine):
    wf = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
          "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
          "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
          "mask": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 128, "height": 96}},
          "box": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}},
          "m": {"class_type": "MaskComposite", "inputs": {"destination": ["mask", 0], "source": ["box", 0],
                                                          "x": 48, "y": 32, "operation": "add"}}}
    image = _with_image(engine, wf)
    wf["imc"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": image, "mask": ["m", 0],
        "noise_mask": True}}
    wf["enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": image, "vae": ["ckpt", 2]}}
    for i, name in enumerate(("cp", "cn", "cl")):
        wf[name] = {"class_type": "Capture", "inputs": {"value": ["imc", i]}}
    wf["ce"] = {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}
    wf["ks"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["imc", 0], "negative": ["imc", 1], "latent_image": ["imc", 2], "denoise": 1.0}}
    wf["cks"] = {"class_type": "Capture", "inputs": {"value": ["ks", 0]}}
    _, cap = _cap(engine, wf)
    latent = cap["cl"]
    assert torch.equal(latent["samples"], cap["ce"]["samples"])  # the original image's latent
    mask = latent["noise_mask"]
    assert mask.shape == (1, 1, 96, 128) and mask[0, 0, 40, 60] == 1 and mask[0, 0, 5, 5] == 0
    for side in ("cp", "cn"):
        (emb, extras), = cap[side]
        concat = extras["concat_latent_image"]
        assert concat.shape == latent["samples"].shape and not torch.equal(concat, latent["samples"])
        assert torch.equal(extras["concat_mask"], mask)
    # A regular model samples it as an inpainting latent: outside the mask the original latent comes back.
    out = cap["cks"]["samples"]
    d = 96 // out.shape[-2]
    assert torch.allclose(out[..., :2, :2], latent["samples"][..., :2, :2], atol=1e-5), d
