"""The latent, image and upscaling nodes through the real Engine, and the sampling nodes' catalogue entries."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from graphs import make_engine, run

from nodegraph.diffusion.types import LatentFormat
from nodegraph.models import ModelHandle, resolve


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(tiny_sd.config)


def _ok(engine, wf):
    result, cap = run(engine, wf)
    result.raise_for_status()
    return cap


def _shape_node(size: int = 64) -> dict:
    return {"class_type": "ShapeImage", "inputs": {"shape": "circle", "color": "red", "background": "blue",
                                                   "size": size, "center_x": 0.5, "center_y": 0.5,
                                                   "radius": 0.3}}


def _cap(src: list) -> dict:
    return {"class_type": "Capture", "inputs": {"value": src}}


def test_catalogue_entries_match_comfyui(engine):
    info = engine.registry.object_info()
    ks = info["KSampler"]
    assert ks["input_order"]["required"] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                             "positive", "negative", "latent_image", "denoise"]
    req = ks["input"]["required"]
    assert req["seed"][1] == {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,  # no step, as ComfyUI's
                              "control_after_generate": True, "tooltip": "the seed of the noise"}
    assert (req["steps"][1]["default"], req["steps"][1]["min"], req["steps"][1]["max"]) == (20, 1, 10000)
    assert {k: req["cfg"][1][k] for k in ("default", "min", "max", "step", "round")} == \
        {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}
    assert (req["denoise"][1]["default"], req["denoise"][1]["min"], req["denoise"][1]["max"]) == (1.0, 0.0, 1.0)
    assert "euler" in req["sampler_name"][0] and "karras" in req["scheduler"][0]
    adv = info["KSamplerAdvanced"]["input_order"]["required"]
    assert adv == ["model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                   "negative", "latent_image", "start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert info["CLIPSetLastLayer"]["input"]["required"]["stop_at_clip_layer"][1]["min"] == -24
    assert info["CLIPTextEncode"]["input_order"]["required"] == ["text", "clip"]
    for name in ("EmptyLatentImage", "VAEDecode", "VAEEncode", "VAEEncodeForInpaint", "SetLatentNoiseMask",
                 "LatentUpscale", "LatentUpscaleBy", "ImageScale", "ImageScaleBy", "ImageUpscaleWithModel",
                 "ConditioningCombine"):
        assert name in info


def test_empty_latent_records_its_pixel_size_and_is_fitted_to_the_model(engine, tiny_sd):
    from nodegraph.diffusion.sampling import prepare_latent

    cap = _ok(engine, {"e": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64,
                                                                          "batch_size": 3}},
                       "m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
                       "c": _cap(["e", 0]), "cm": _cap(["m", 0])})
    assert isinstance(cap["cm"], ModelHandle)  # loaders return light handles ...
    latent, model = cap["c"], resolve(cap["cm"])  # ... to the model the engine's ModelManager holds
    assert latent["samples"].shape == (3, 4, 8, 12) and latent["pixel_size"] == (64, 96)
    assert model.latent.downscale == 2  # the tiny VAE has two blocks
    assert prepare_latent(model, latent).shape == (3, 4, 32, 48)
    quarter = replace(model, latent=replace(model.latent, downscale=4))
    assert prepare_latent(quarter, latent).shape == (3, 4, 16, 24)
    encoded = {"samples": torch.randn(1, 4, 8, 8), "downscale": 8}
    with pytest.raises(ValueError, match="encode the image with this checkpoint's VAE"):
        prepare_latent(model, encoded)
    with pytest.raises(ValueError, match="channels"):
        prepare_latent(replace(model, latent=LatentFormat(channels=16, downscale=2)), latent)


def test_vae_encode_decode_round_trip_and_crop(engine):
    cap = _ok(engine, {
        "m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "img": {"class_type": "EmptyImage", "inputs": {"width": 37, "height": 30, "batch_size": 2,
                                                       "color": 0x336699}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["m", 2]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["enc", 0], "vae": ["m", 2]}},
        "c_enc": _cap(["enc", 0]), "c_dec": _cap(["dec", 0]), "vae": _cap(["m", 2])})
    vae = cap["vae"].vae
    assert cap["c_enc"]["samples"].shape == (2, 4, 15, 18)  # cropped to 36×30, /2
    image = cap["c_dec"]
    assert image.shape == (2, 30, 36, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    with torch.no_grad():  # the posterior mean of the same pixels, decoded by hand
        x = torch.tensor([0x33, 0x66, 0x99], dtype=torch.float32) / 255.0
        x = x.view(1, 3, 1, 1).expand(1, 3, 30, 36) * 2 - 1
        z = vae.encode(x).latent_dist.mean
        ref = (vae.decode(z).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(cap["c_enc"]["samples"][:1], z, atol=1e-3)  # batch of 2 vs 1: float noise only
    assert torch.allclose(image[:1], ref, atol=1e-3)


def test_vae_encode_for_inpaint_greys_and_grows(engine):
    cap = _ok(engine, {
        "m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd"}},
        "s": _shape_node(), "vae": _cap(["m", 2]), "mask": _cap(["s", 1]), "img": _cap(["s", 0]),
        "enc": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["s", 0], "vae": ["m", 2],
                                                                "mask": ["s", 1], "grow_mask_by": 8}},
        "c": _cap(["enc", 0])})
    out, mask = cap["c"], cap["mask"]
    inside = mask.round()
    assert out["noise_mask"].shape == (1, 1, 64, 64)
    grown = out["noise_mask"][0, 0]
    assert bool((grown >= inside[0]).all()) and grown.sum() > inside.sum() + 64
    greyed = (cap["img"] - 0.5) * (1 - inside[..., None]) + 0.5
    with torch.no_grad():
        z = cap["vae"].vae.encode(greyed.movedim(-1, 1) * 2 - 1).latent_dist.mean
        plain = cap["vae"].vae.encode(cap["img"].movedim(-1, 1) * 2 - 1).latent_dist.mean
    assert torch.allclose(out["samples"], z, atol=1e-3)
    assert (out["samples"] - plain).abs().max() > 0.05


def test_set_latent_noise_mask_and_latent_upscale(engine):
    wf = {
        "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}},
        "s": _shape_node(32),
        "nm": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["e", 0], "mask": ["s", 1]}},
        "c_nm": _cap(["nm", 0]),
    }
    for i, method in enumerate(("nearest-exact", "bilinear", "area", "bicubic", "bislerp")):
        wf[f"up{i}"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["e", 0], "upscale_method": method,
                                                                 "width": 128, "height": 0, "crop": "disabled"}}
        wf[f"c_up{i}"] = _cap([f"up{i}", 0])
    wf["by"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["nm", 0], "upscale_method": "bislerp",
                                                            "scale_by": 1.5}}
    wf["crop"] = {"class_type": "LatentUpscale", "inputs": {"samples": ["e", 0], "upscale_method": "bilinear",
                                                            "width": 64, "height": 64, "crop": "center"}}
    wf["c_by"], wf["c_crop"] = _cap(["by", 0]), _cap(["crop", 0])
    cap = _ok(engine, wf)
    assert cap["c_nm"]["noise_mask"].shape == (1, 1, 32, 32) and "pixel_size" not in cap["c_nm"]
    for i in range(5):
        up = cap[f"c_up{i}"]
        assert up["samples"].shape == (1, 4, 8, 16) and up["pixel_size"] == (64, 128)  # aspect kept
    assert cap["c_by"]["samples"].shape == (1, 4, 6, 12) and "noise_mask" in cap["c_by"]
    assert cap["c_crop"]["samples"].shape == (1, 4, 8, 8)


def test_bislerp_keeps_magnitudes_and_interpolates():
    from nodegraph.nodes.image_ops import resample

    z = torch.randn(1, 4, 5, 7)
    same = resample(z, 7, 5, "bislerp")
    assert torch.allclose(same, z)
    big = resample(z, 21, 15, "bislerp")
    norms = big.norm(dim=1)
    assert norms.min() >= z.norm(dim=1).min() - 1e-4 and norms.max() <= z.norm(dim=1).max() + 1e-4
    assert torch.allclose(big[..., 1::3, 1::3], z, atol=1e-5)  # cell centres land on the source cells


def test_image_scale_nodes(engine):
    wf = {"s": _shape_node(48)}
    for i, method in enumerate(("nearest-exact", "bilinear", "area", "bicubic", "lanczos")):
        wf[f"sc{i}"] = {"class_type": "ImageScale", "inputs": {"image": ["s", 0], "upscale_method": method,
                                                              "width": 80, "height": 0, "crop": "disabled"}}
        wf[f"c{i}"] = _cap([f"sc{i}", 0])
    wf["by"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["s", 0], "upscale_method": "bilinear",
                                                         "scale_by": 0.5}}
    wf["crop"] = {"class_type": "ImageScale", "inputs": {"image": ["s", 0], "upscale_method": "area",
                                                         "width": 40, "height": 20, "crop": "center"}}
    wf["c_by"], wf["c_crop"], wf["orig"] = _cap(["by", 0]), _cap(["crop", 0]), _cap(["s", 0])
    cap = _ok(engine, wf)
    for i in range(5):
        img = cap[f"c{i}"]
        assert img.shape == (1, 80, 80, 3) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert abs(float(img.mean()) - float(cap["orig"].mean())) < 0.02  # same picture, resized
    assert cap["c_by"].shape == (1, 24, 24, 3)
    assert cap["c_crop"].shape == (1, 20, 40, 3)


class FakeDescriptor:
    """What ImageUpscaleWithModel uses of spandrel's ImageModelDescriptor: ``model``, ``scale``, call on NCHW."""

    def __init__(self, scale: int = 2) -> None:
        self.scale = scale
        self.supports_half = True
        self.model = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]).view(3, 3, 1, 1))
            self.model.bias.fill_(0.01)
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, image):
        self.calls.append(tuple(image.shape))
        return F.interpolate(self.model(image), scale_factor=self.scale, mode="nearest")


def test_image_upscale_with_model_tiles_large_images(tiny_sd, monkeypatch):
    import nodegraph.nodes.upscaling as up

    fake = FakeDescriptor()

    class Loader(up.Node):
        """Test stand-in for UpscaleModelLoader (spandrel is optional and not installed here)."""

        INPUTS = {}
        OUTPUTS = (up.Output("UPSCALE_MODEL"),)

        def execute(self, ctx):
            return (fake,)

    engine = make_engine(tiny_sd.config, extra_nodes=(Loader,))
    wf = {"s": _shape_node(64), "l": {"class_type": "Loader", "inputs": {}},
          "u": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["l", 0], "image": ["s", 0]}},
          "c": _cap(["u", 0]), "o": _cap(["s", 0])}
    small = _ok(engine, wf)
    image = small["o"]
    with torch.no_grad():
        expected = fake(image.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    assert small["c"].shape == (1, 128, 128, 3)
    assert torch.allclose(small["c"], expected, atol=1e-6)
    monkeypatch.setattr(up, "TILE", 24)
    monkeypatch.setattr(up, "OVERLAP", 6)
    fake.calls.clear()
    engine.cache.clear()
    tiled = _ok(engine, wf)
    assert len(fake.calls) > 4 and all(c[2] <= 24 and c[3] <= 24 for c in fake.calls[:-1])
    assert torch.allclose(tiled["c"], expected, atol=1e-5)  # seams blended away


def test_upscale_models_load_through_the_model_manager_and_reload_after_eviction(tiny_sd, tmp_path):
    """A loader using ``ctx.models.load_file`` returns a handle; ImageUpscaleWithModel resolves it (reloading the
    file when the manager dropped the model) and gives the same image."""
    from safetensors.torch import save_file

    import nodegraph.nodes.upscaling as up
    from nodegraph.models import ModelHandle, ModelManager

    loads: list[str] = []
    config = replace(tiny_sd.config, models_dir=tmp_path / "models", plugin_dirs=[])
    config.model_dir("upscale_models").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(config.model_dir("upscale_models") / "x2.safetensors"))

    class Loader(up.Node):
        """Test stand-in for UpscaleModelLoader: the same load_file call, with a fake spandrel descriptor."""

        INPUTS = {}
        OUTPUTS = (up.Output("UPSCALE_MODEL"),)

        def execute(self, ctx):
            def load():
                loads.append("x2")
                return FakeDescriptor()

            return (ctx.models.load_file("upscale_models", "x2.safetensors", load),)

    engine = make_engine(config, extra_nodes=(Loader,))
    wf = {"s": _shape_node(32), "l": {"class_type": "Loader", "inputs": {}},
          "u": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["l", 0], "image": ["s", 0]}},
          "c": _cap(["u", 0]), "h": _cap(["l", 0]), "o": _cap(["s", 0])}
    first = _ok(engine, wf)
    assert isinstance(first["h"], ModelHandle) and first["h"].kind == "upscale_models" and loads == ["x2"]
    manager = engine.services.find(ModelManager)
    manager.release()  # as under memory pressure: the cached handle stays, the model goes
    wf["s"] = _shape_node(24)  # a new image: the upscaler runs again, the loader comes from the cache
    result, again = run(engine, wf)
    assert "l" in result.raise_for_status().cached and loads == ["x2", "x2"]  # the handle read the file again
    with torch.no_grad():
        expected = FakeDescriptor()(again["o"].movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    assert again["c"].shape == (1, 48, 48, 3) and torch.allclose(again["c"], expected, atol=1e-6)


def test_save_image_refuses_a_bad_filename_prefix_with_a_node_error(engine):
    for prefix, reason in (("a" * 300, "bytes long"), ("sub/x\x01y", "control characters")):
        wf = {"s": _shape_node(16),
              "save": {"class_type": "SaveImage", "inputs": {"images": ["s", 0], "filename_prefix": prefix}}}
        result, _ = run(engine, wf)
        assert result.status == "error" and result.error.node_id == "save", result
        assert "filename_prefix" in result.error.exception_message and reason in result.error.exception_message
