"""Flux nodes and loaders beyond the parity graph: fp8 storage, schnell, KSamplerAdvanced stages, denoise,
Kontext reference latents, CLIPLoader, and the refusals (unknown files, unsupported types and samplers)."""

from __future__ import annotations

import family_kit as kit
import pytest
import torch
from flux_tiny import LAYOUTS, TRANSFORMER
from test_flux_parity import SEED, graph

from nodegraph.diffusion.detect import UnknownModelError, read_header
from nodegraph.diffusion.flow.detect import detect_transformer
from nodegraph.validation import ValidationReport

engine = kit.engine_fixture("tiny_flux")


def _latent(engine, wf: dict) -> torch.Tensor:
    return kit.run(engine, kit.add_captures(wf, lat="ks"))["lat"]["samples"]


def test_fp8_storage_runs_close_to_full_precision(engine):
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    full = _latent(engine, graph(LAYOUTS["comfyui"]))
    fp8 = _latent(engine, graph(LAYOUTS["comfyui"], weight_dtype="fp8_e4m3fn"))
    assert not torch.equal(full, fp8)  # really stored in 8 bits
    assert float((full - fp8).abs().mean()) < 0.1 * float(full.abs().mean())


def test_advanced_stages_continue_like_one_run(engine):
    """KSamplerAdvanced 0→2 with leftover noise, then 2→4 without adding noise, equals one 4-step KSampler."""
    one = _latent(engine, graph(LAYOUTS["comfyui"]))
    wf = graph(LAYOUTS["comfyui"])
    common = {k: wf["ks"]["inputs"][k] for k in ("model", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                                 "negative")}
    wf["ks1"] = kit.node("KSamplerAdvanced", **common, add_noise="enable", noise_seed=SEED, latent_image=["empty", 0],
                     start_at_step=0, end_at_step=2, return_with_leftover_noise="enable")
    wf["ks"] = kit.node("KSamplerAdvanced", **common, add_noise="disable", noise_seed=SEED, latent_image=["ks1", 0],
                    start_at_step=2, end_at_step=10000, return_with_leftover_noise="disable")
    two = _latent(engine, wf)
    assert torch.allclose(one, two, atol=1e-4)


def test_denoise_and_samplers(engine):
    base = _latent(engine, graph(LAYOUTS["comfyui"]))
    wf = graph(LAYOUTS["comfyui"])
    wf["ks"]["inputs"]["denoise"] = 0.5
    assert not torch.allclose(_latent(engine, wf), base)
    for sampler in ("heun", "dpmpp_2m"):
        out = _latent(engine, graph(LAYOUTS["comfyui"], sampler=sampler))
        assert torch.isfinite(out).all() and out.shape == base.shape
    for sampler in ("euler_ancestral", "dpmpp_2m_sde"):  # ComfyUI's rectified-flow forms (ksamplers.forms)
        out = _latent(engine, graph(LAYOUTS["comfyui"], sampler=sampler))
        assert torch.isfinite(out).all() and not torch.allclose(out, base)


def test_reference_latent_changes_the_result(engine):
    base = _latent(engine, graph(LAYOUTS["comfyui"]))
    wf = graph(LAYOUTS["comfyui"])
    wf["ref_src"] = kit.node("EmptySD3LatentImage", width=32, height=48, batch_size=1)
    wf["ref"] = kit.node("ReferenceLatent", conditioning=["guide", 0], latent=["ks_ref", 0])
    wf["ks_ref"] = kit.node("KSampler", **dict(wf["ks"]["inputs"], latent_image=["ref_src", 0]))
    wf["ks"]["inputs"]["positive"] = ["ref", 0]
    out = _latent(engine, wf)
    assert out.shape == base.shape and not torch.allclose(out, base)


def test_schnell_is_detected_without_guidance(tiny_flux, tmp_path):
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    model = FluxTransformer2DModel(**dict(TRANSFORMER, guidance_embeds=False))
    path = tmp_path / "schnell.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    found = detect_transformer(read_header(path))
    assert (found.arch, found.layout) == ("flux-schnell", "diffusers")


def test_unknown_and_other_family_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    cases = {"sd3.safetensors": ({"joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(3, 1)}, "Stable Diffusion 3"),
             "unet.safetensors": ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "UNet"),
             "junk.safetensors": ({"foo.bar": torch.zeros(1)}, "no diffusion transformer")}
    for name, (state, words) in cases.items():
        save_file(state, str(tmp_path / name))
        with pytest.raises(UnknownModelError, match=words):
            detect_transformer(read_header(tmp_path / name))


def test_loader_types_refused_at_validation(engine):
    wf = graph(LAYOUTS["comfyui"])
    wf["clip"]["inputs"]["type"] = "kandinsky5"  # a family nodegraph does not load
    with pytest.raises(ValidationReport) as info:
        engine.prepare(wf)
    assert "supported: sdxl, flux" in str(info.value.node_errors["clip"])


def test_cliploader_stable_diffusion_encodes_with_clip_l(engine):
    wf = {"clip": kit.node("CLIPLoader", clip_name="clip_l.safetensors", type="stable_diffusion"),
          "enc": kit.encode("a red cat"), "c": kit.capture("enc")}
    emb = kit.run(engine, wf)["c"][0][0]
    assert emb.shape == (1, 77, 64)


def test_fill_model_takes_the_inpainting_conditioning(engine, tiny_flux):
    """A Flux Fill-shaped model (384 input features: latent, masked image, 64-channel mask) samples through
    InpaintModelConditioning + KSampler, and the mask reaches it."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from nodegraph.diffusion.flow.convert import to_original

    torch.manual_seed(1)
    fill = FluxTransformer2DModel(**dict(TRANSFORMER, in_channels=384, out_channels=64))
    path = tiny_flux.home / "models" / "diffusion_models" / "flux1-fill-tiny.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous()
               for k, v in to_original(dict(fill.state_dict())).items()}, str(path))

    def run(mask_value: float) -> torch.Tensor:
        wf = graph("flux1-fill-tiny.safetensors")
        wf["image"] = kit.empty_image(64, 64, 0x8040C0)
        wf["mask"] = kit.node("SolidMask", value=mask_value, width=64, height=64)
        wf["inpaint"] = kit.node("InpaintModelConditioning", positive=["guide", 0], negative=["neg", 0], vae=["vae", 0],
                             pixels=["image", 0], mask=["mask", 0], noise_mask=False)
        wf["ks"]["inputs"].update(positive=["inpaint", 0], negative=["inpaint", 1], latent_image=["inpaint", 2])
        return _latent(engine, wf)

    full, none = run(1.0), run(0.0)
    assert torch.isfinite(full).all() and full.shape == (1, 16, 8, 8)
    assert not torch.allclose(full, none)
    found = detect_transformer(read_header(path))
    assert found.arch == "flux-fill"
