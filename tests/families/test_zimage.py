"""Z-Image through our nodes equals diffusers: each file loads with the diffusers modules' weights, and ComfyUI's
graph UNETLoader + CLIPLoader(lumina2, a Qwen3 file) + VAELoader(ae) + CLIPTextEncode + ModelSamplingAuraFlow +
EmptySD3LatentImage + KSampler (euler/simple) + VAEDecode gives ZImagePipeline's image with the same noise and
sigmas, ≤ 1/255 (with and without cfg). ComfyUI_examples' z_image graph validates with only the model files
missing and runs on the tiny model saved under its file names; the shipped config has Z-Image's published size."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from lumina_tiny import (
    QWEN3_FILE,
    VAE_FILE,
    Z_FILES,
    TinyLumina,
    build,
    z_image_to_comfyui,
)

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT = 7, 3, 64, 3.0
EXAMPLE = Path(__file__).parent / "lumina_examples" / "z_image_turbo_example.json"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "ckpt_name"}

tiny = kit.tiny_fixture(build, "tiny-lumina-home")
engine = kit.engine_fixture("tiny")


def graph(unet: str = Z_FILES["comfyui"], cfg: float = 1.0, sampler: str = "euler") -> dict:
    """ComfyUI's Z-Image text-to-image graph (the editor's default), image captured as "img"."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name=QWEN3_FILE, type="lumina2", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "aura": kit.node("ModelSamplingAuraFlow", model=["unet", 0], shift=SHIFT),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("aura", SEED, STEPS, cfg, sampler),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


def reference(tiny: TinyLumina, guidance: float) -> torch.Tensor:
    """ZImagePipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        out = tiny.z_image_pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                      sigmas=kit.simple_sigmas(STEPS, SHIFT), guidance_scale=guidance,
                                      negative_prompt="",
                                      latents=noise, output_type="pt").images
    return kit.channels_last(out)


@pytest.mark.parametrize("layout", sorted(Z_FILES))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    cap = kit.run(engine, kit.add_captures({"unet": graph(Z_FILES[layout])["unet"], "clip": graph()["clip"]},
                                   m="unet", c="clip"))
    model, clip = kit.unwrap(cap["m"]), kit.unwrap(cap["c"])
    assert model.family == "z_image" and clip.arch == "z_image"
    assert (model.flow.kind, model.flow.shift, model.flow.multiplier) == ("discrete", 3.0, 1.0)  # ComfyUI's ZImage
    for ours, ref in ((model.unet, tiny.z_image), (clip.encoders[0], tiny.qwen3)):
        kit.assert_same_weights(ours, ref)


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_graph_image_equals_z_image_pipeline(engine, tiny, cfg):
    """ComfyUI's cfg c is the pipeline's guidance_scale c - 1 (it guides as pos + g·(pos - neg))."""
    image = kit.run(engine, graph(cfg=cfg))["img"]
    assert image.shape == (1, SIZE, SIZE, 3)
    kit.assert_parity(image, reference(tiny, cfg - 1.0), f"Z-Image parity (cfg {cfg}) vs ZImagePipeline")
    assert float(image.std()) > 0.01


def test_res_multistep_and_cfg_change_the_image(engine):
    base = kit.run(engine, graph())["img"]
    for other in (graph(sampler="res_multistep"), graph(cfg=3.0)):
        image = kit.run(engine, other)["img"]
        assert image.shape == base.shape and kit.max_diff(image, base) > 1e-3


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tiny, tmp_path):
    import shutil

    from nodegraph.diffusion.lumina.loading import load_lumina_clip

    lonely = tmp_path / QWEN3_FILE
    shutil.copy(tiny.home / "models" / "text_encoders" / QWEN3_FILE, lonely)
    with pytest.raises(FileNotFoundError, match="qwen3_tokenizer/"):
        load_lumina_clip(lonely, QWEN3_FILE)
    from nodegraph.diffusion.lumina.sampling import ZImageDenoiser

    bad = torch.zeros(1, 4, 48)  # e.g. Gemma-width states: the sampler names the encoder to use
    model = kit.unwrap(kit.run(engine, {"unet": graph()["unet"], "m": kit.capture("unet")})["m"])
    with pytest.raises(ValueError, match="CLIPLoader type lumina2"):
        ZImageDenoiser(model, [(bad, {})], [], 1.0, torch.float32, "cpu")


def test_shipped_config_has_the_published_size_and_is_detected():
    """Z-Image(-Turbo): 6,154,908,736 parameters ("6B"); detection reads the same config back from full-size
    tensor shapes in ComfyUI's layout (meta device, no weights)."""
    from diffusers import ZImageTransformer2DModel

    from nodegraph.diffusion.lumina.detect import detect_transformer, shipped_config

    model = kit.on_meta(lambda: ZImageTransformer2DModel.from_config(shipped_config("z_image_transformer")))
    assert kit.parameter_count(model) == 6_154_908_736
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in z_image_to_comfyui(model.state_dict()).items()}
    found = detect_transformer(shapes)
    assert found is not None and (found.family, found.layout) == ("z_image", "comfyui")
    assert found.config == shipped_config("z_image_transformer")


def test_example_validates_but_for_missing_files(tmp_path):
    _, _, names = kit.validate_examples([EXAMPLE], FILE_INPUTS, tmp_path)
    assert names == {"unet_name", "clip_name", "vae_name"}


def test_example_runs_on_the_tiny_model(tiny, tmp_path):
    prompt = kit.shrink(kit.load_example(EXAMPLE), {"EmptySD3LatentImage": {"width": 48, "height": 32},
                                            "KSampler": {"steps": 2}})
    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (48, 32))


def test_sampler_custom_advanced_equals_ksampler(engine):
    """RandomNoise + BasicGuider + KSamplerSelect(euler) + BasicScheduler(simple) through SamplerCustomAdvanced (the
    shared custom loop with ZImageDenoiser) gives KSampler's latent."""
    wf = graph()
    wf.update({
        "noise": kit.node("RandomNoise", noise_seed=SEED),
        "guider": kit.node("BasicGuider", model=["aura", 0], conditioning=["pos", 0]),
        "sampler": kit.node("KSamplerSelect", sampler_name="euler"),
        "sched": kit.node("BasicScheduler", model=["aura", 0], scheduler="simple", steps=STEPS, denoise=1.0),
        "custom": kit.node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                       sigmas=["sched", 0], latent_image=["empty", 0]),
    })
    cap = kit.run(engine, kit.add_captures(wf, a="custom", b="ks"))
    assert torch.allclose(cap["a"]["samples"], cap["b"]["samples"], atol=1e-5)


def test_fp8_storage_runs_close_to_full_precision(engine):
    """UNETLoader weight_dtype fp8_e4m3fn keeps the weights in 8 bits (diffusers' layerwise casting)."""
    full = kit.run(engine, graph())["img"]
    wf = graph()
    wf["unet"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    cap = kit.run(engine, kit.add_captures(wf, m="unet"))
    weight = kit.unwrap(cap["m"]).unet.layers[0].attention.to_q.weight
    assert weight.dtype == torch.float8_e4m3fn
    diff = kit.max_diff(cap["img"], full)
    print(f"Z-Image fp8 storage: max |fp8 - full| = {diff:.2e}")
    assert 0 < diff < 0.1
