"""Qwen-Image through our nodes equals diffusers: each file loads with the diffusers modules' weights, and the graph
UNETLoader + CLIPLoader(qwen_image) + VAELoader + CLIPTextEncode + ModelSamplingAuraFlow + EmptySD3LatentImage +
KSampler (euler/simple) + VAEDecode gives QwenImagePipeline's image with the same noise and sigmas, ≤ 1/255.
ComfyUI_examples' qwen_image graphs validate with only the model files missing, and the basic one runs on the tiny
model saved under its file names."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from qwen_tiny import LAYOUTS, TEXT_ENCODER, VAE_FILE, build

from nodegraph.diffusion.flow.latents import pack

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT = 7, 4, 64, 3.1
EXAMPLES = sorted((Path(__file__).parent / "qwen_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image"}

tiny_qwen = kit.tiny_fixture(build, "tiny-qwen-home")
engine = kit.engine_fixture("tiny_qwen")


def graph(unet: str = LAYOUTS["comfyui"], cfg: float = 1.0, shift: float = SHIFT) -> dict:
    """ComfyUI's Qwen-Image text-to-image graph, image captured as "img"."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name=TEXT_ENCODER, type="qwen_image", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(" "),
        "aura": kit.node("ModelSamplingAuraFlow", model=["unet", 0], shift=shift),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("aura", SEED, STEPS, cfg),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


@pytest.fixture(scope="module")
def reference(tiny_qwen):
    """QwenImagePipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        out = tiny_qwen.pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                   sigmas=kit.simple_sigmas(STEPS, SHIFT), true_cfg_scale=1.0, latents=pack(noise),
                                   output_type="pt").images
    return kit.channels_last(out)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny_qwen, layout):
    wf = kit.add_captures({"unet": graph(LAYOUTS[layout])["unet"], "clip": graph()["clip"], "vae": graph()["vae"]},
                      m="unet", c="clip", v="vae")
    cap = kit.run(engine, wf)
    model, clip, vae = kit.unwrap(cap["m"]), kit.unwrap(cap["c"]), kit.unwrap(cap["v"])
    assert model.family == "qwen_image" and model.flow.kind == "discrete" and model.flow.multiplier == 1.0
    for ours, ref in ((model.unet, tiny_qwen.transformer), (clip.encoders[0], tiny_qwen.text_encoder),
                      (vae.vae.inner, tiny_qwen.vae)):
        kit.assert_same_weights(ours, ref)


def test_graph_image_equals_qwen_image_pipeline(engine, reference):
    kit.assert_parity(kit.run(engine, graph())["img"], reference, "Qwen-Image parity vs QwenImagePipeline")


def _edit_run(engine, plus: bool) -> dict:
    wf = graph()
    wf["picture"] = kit.empty_image(SIZE, SIZE, 0x3080D0)
    image = {"image1": ["picture", 0]} if plus else {"image": ["picture", 0]}
    wf["pos"] = kit.node("TextEncodeQwenImageEditPlus" if plus else "TextEncodeQwenImageEdit",
                     **dict(image, clip=["clip", 0], prompt=PROMPT, vae=["vae", 0]))
    return kit.run(engine, kit.add_captures(wf, pic="picture", cond="pos"))


def _edit_reference(pipe, cap: dict) -> torch.Tensor:
    from PIL import Image

    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    with torch.no_grad():
        ref = pipe(image=picture, prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                   sigmas=kit.simple_sigmas(STEPS, SHIFT), true_cfg_scale=1.0, latents=pack(noise),
                   output_type="pt").images
    return kit.channels_last(ref)


@pytest.mark.parametrize("plus", [False, True], ids=["edit", "edit_plus"])
def test_edit_graph_equals_qwen_image_edit_pipelines(engine, tiny_qwen, plus):
    """EmptyImage → TextEncodeQwenImageEdit(Plus) (with the VAE) → KSampler equals QwenImageEdit(Plus)Pipeline:
    the vision tower sees the image (at 1024², Plus: 384²), the 1024² reference latent rides along, ≤ 1/255."""
    cap = _edit_run(engine, plus)
    refs = cap["cond"][0][1]["reference_latents"]
    assert len(refs) == 1 and tuple(refs[0].shape) == (1, 16, 128, 128)  # 64² scaled to 1024², 1/8
    pipe = tiny_qwen.edit_plus_pipeline() if plus else tiny_qwen.edit_pipeline()
    kit.assert_parity(cap["img"], _edit_reference(pipe, cap), f"Qwen-Image-Edit{' Plus' if plus else ''} parity vs "
                  f"{type(pipe).__name__}")


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler + BasicGuider + euler through flow.custom (QwenDenoiser) equals KSampler on the same noise."""
    from nodegraph.diffusion.guiders import BasicGuider

    cap = kit.run(engine, kit.add_captures(graph(), lat="ks", cond="pos", shifted="aura", empty_lat="empty"))
    model = kit.unwrap(cap["shifted"])
    out, _ = kit.custom_sample(model, BasicGuider(model, cap["cond"]), cap["empty_lat"], STEPS, SEED)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_fp8_storage_runs_close_to_full_precision(engine, reference):
    wf = graph()
    wf["unet"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    cap = kit.run(engine, kit.add_captures(wf, m="unet"))
    assert any(p.dtype == torch.float8_e4m3fn for p in kit.unwrap(cap["m"]).unet.parameters())  # really 8 bits
    diff = (cap["img"] - reference).abs()
    assert 0 < float(diff.mean()) < 0.05


def test_scaled_fp8_text_encoder_loads_unscaled(tiny_qwen, tmp_path):
    """A ComfyUI "fp8_scaled" text encoder (float8 weights + scale_weight) loads as weights × scale."""
    from safetensors.torch import load_file, save_file

    from nodegraph.diffusion.qwen.loading import load_qwen_clip

    folder = tiny_qwen.home / "models" / "text_encoders"
    state = load_file(str(folder / TEXT_ENCODER))
    scaled = kit.scaled_fp8(state, lambda key, value: key.endswith("proj.weight") and value.dim() == 2)
    path = folder / "qwen_tiny_fp8_scaled.safetensors"
    save_file(scaled, str(path))
    try:
        model = load_qwen_clip(path, path.name).encoders[0]
        ours = model.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"]
        ref = tiny_qwen.text_encoder.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"]
        assert not torch.equal(ours, ref) and torch.allclose(ours, ref, atol=0.1 * float(ref.abs().max()))
    finally:
        path.unlink()


def test_shift_and_cfg_change_the_image(engine, reference):
    for wf in (graph(shift=1.0), graph(cfg=2.5)):
        assert kit.max_diff(kit.run(engine, wf)["img"], reference) > 1 / 255


def test_vae_round_trip_is_normalised(engine, tiny_qwen):
    """VAEEncode gives QwenImagePipeline's normalised latent ((mean - latents_mean) / latents_std)."""
    wf = {"vae": graph()["vae"], "pic": kit.empty_image(SIZE, SIZE, 0x3080D0),
          "enc": kit.node("VAEEncode", pixels=["pic", 0], vae=["vae", 0])}
    cap = kit.run(engine, kit.add_captures(wf, lat="enc", p="pic"))
    vae = tiny_qwen.vae
    with torch.no_grad():
        x = cap["p"].movedim(-1, 1)[:, :3, None] * 2 - 1
        raw = vae.encode(x).latent_dist.mean[:, :, 0]
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1)
    assert torch.allclose(cap["lat"]["samples"], (raw - mean) / std, atol=1e-5)


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tmp_path):
    from nodegraph.diffusion.qwen.loading import qwen_tokenizer
    from nodegraph.diffusion.qwen.sampling import QwenDenoiser

    model = kit.unwrap(kit.run(engine, {"unet": graph()["unet"], "m": kit.capture("unet")})["m"])
    with pytest.raises(ValueError, match="qwen_image"):  # e.g. a CLIP-L conditioning
        QwenDenoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(FileNotFoundError, match="qwen_tokenizer"):
        qwen_tokenizer(tmp_path / TEXT_ENCODER)


def test_examples_validate_but_for_missing_files(tmp_path):
    checked, _, _ = kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path, skip_absent=True)
    assert {"qwen_image_basic_example", "qwen_image_edit_2509_basic_example"} <= set(checked)


def test_basic_example_runs_on_the_tiny_model(tiny_qwen, tmp_path):
    prompt = kit.load_example(Path(__file__).parent / "qwen_examples" / "qwen_image_basic_example.json")
    kit.shrink(prompt, {"EmptySD3LatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    kit.run_example(tiny_qwen.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))
