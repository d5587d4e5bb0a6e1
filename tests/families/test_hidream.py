"""HiDream-I1 through our nodes equals diffusers: each file loads with the diffusers/transformers modules' weights,
and the graph UNETLoader + QuadrupleCLIPLoader + VAELoader + CLIPTextEncode + ModelSamplingSD3 +
EmptySD3LatentImage + KSampler (euler/simple, cfg) + VAEDecode gives HiDreamImagePipeline's image with the same noise
and sigmas, ≤ 1/255. CLIPTextEncodeHiDream's four prompts equal the pipeline's prompt..prompt_4. ComfyUI_examples'
hidream graphs validate with only the model files missing, and the I1 ones run on the tiny model saved under their
file names."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from hidream_tiny import ENCODERS, LAYOUTS, build

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT, CFG = 7, 3, 64, 3.0, 2.0
EXAMPLES = sorted((Path(__file__).parent / "hidream_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4", "vae_name", "image"}

tiny = kit.tiny_fixture(build, "tiny-hidream-home")
engine = kit.engine_fixture("tiny")


def graph(unet: str = LAYOUTS["comfyui"], cfg: float = CFG, shift: float = SHIFT) -> dict:
    """ComfyUI_examples' HiDream graph (QuadrupleCLIPLoader, ModelSamplingSD3), image captured as "img"."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("QuadrupleCLIPLoader", **{f"clip_name{i + 1}": n for i, n in enumerate(ENCODERS)}),
        "vae": kit.node("VAELoader", vae_name="ae.safetensors"),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(""),
        "shift": kit.node("ModelSamplingSD3", model=["unet", 0], shift=shift),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("shift", SEED, STEPS, cfg),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


@pytest.fixture(scope="module")
def reference(tiny):
    """HiDreamImagePipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        out = tiny.pipeline(SIZE)(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                  sigmas=kit.simple_sigmas(STEPS, SHIFT, 1000.0), guidance_scale=CFG, latents=noise,
                                  output_type="pt").images
    return kit.channels_last(out)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    cap = kit.run(engine, kit.add_captures({"unet": graph(LAYOUTS[layout])["unet"], "clip": graph()["clip"]},
                                   m="unet", c="clip"))
    model, clip = kit.unwrap(cap["m"]), kit.unwrap(cap["c"])
    assert model.family == "hidream" and model.flow.kind == "discrete" and model.flow.shift == 1.0
    assert model.flow.multiplier == 1000.0 and clip.arch == "hidream"
    pairs = zip((model.unet, *clip.encoders), (tiny.transformer, tiny.clip_l, tiny.clip_g, tiny.t5, tiny.llama.model))
    for ours, ref in pairs:
        kit.assert_same_weights(ours, ref, type(ref).__name__)


def test_graph_image_equals_hidream_pipeline(engine, reference):
    kit.assert_parity(kit.run(engine, graph())["img"], reference, "HiDream parity vs HiDreamImagePipeline")


def test_four_prompts_equal_the_pipeline_encoding(engine, tiny):
    """CLIPTextEncodeHiDream feeds each encoder its own prompt, as the pipeline's prompt, prompt_2, _3, _4."""
    texts = {"clip_l": "a red cat", "clip_g": "the blue sky", "t5xxl": "a green tree", "llama": "photo of a dog"}
    wf = {"clip": graph()["clip"], "enc": kit.node("CLIPTextEncodeHiDream", **dict(texts, clip=["clip", 0])),
          "cond": kit.capture("enc")}
    ((t5, extras),) = kit.run(engine, wf)["cond"]
    with torch.no_grad():
        ref = tiny.pipeline(SIZE).encode_prompt(texts["clip_l"], texts["clip_g"], texts["t5xxl"], texts["llama"],
                                                device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(t5, ref[0], atol=1e-6)
    assert torch.allclose(extras["conditioning_llama3"], ref[2].movedim(0, 1), atol=1e-6)
    assert torch.allclose(extras["pooled_output"], ref[4], atol=1e-6)
    assert tuple(extras["conditioning_llama3"].shape) == (1, 4, 128, 32)  # every layer's states, 128 tokens


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler + CFGGuider + euler through flow.custom (HiDreamDenoiser) equals KSampler on the same noise."""
    from nodegraph.diffusion.guiders import CFGGuider

    cap = kit.run(engine, kit.add_captures(graph(), lat="ks", cond="pos", uncond="neg", shifted="shift",
                                           empty_lat="empty"))
    model = kit.unwrap(cap["shifted"])
    out, _ = kit.custom_sample(model, CFGGuider(model, cap["cond"], cap["uncond"], CFG), cap["empty_lat"], STEPS, SEED)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_shift_and_cfg_change_the_image(engine, reference):
    for wf in (graph(shift=1.0), graph(cfg=1.0)):
        assert kit.max_diff(kit.run(engine, wf)["img"], reference) > 1 / 255


def test_subsets_load_and_foreign_conditioning_is_refused(engine, tiny):
    """CLIPLoader/DualCLIPLoader type hidream load a subset (ComfyUI's zeros for the rest); the tiny transformer
    then refuses the full-size zeros, and a Flux-style conditioning, naming the loaders to use."""
    from nodegraph.diffusion.hidream.sampling import HiDreamDenoiser

    wf = {"dual": kit.node("DualCLIPLoader", clip_name1=ENCODERS[3], clip_name2=ENCODERS[0], type="hidream"),
          "one": kit.node("CLIPLoader", clip_name=ENCODERS[2], type="hidream"),
          "d": kit.encode(PROMPT, "dual"), "o": kit.encode(PROMPT, "one"), "unet": graph()["unet"]}
    cap = kit.run(engine, kit.add_captures(wf, dc="d", oc="o", m="unet"))
    (t5, extras), = cap["dc"]
    assert tuple(t5.shape) == (1, 128, 4096) and not t5.any()  # no T5: zeros
    assert tuple(extras["pooled_output"].shape) == (1, 32 + 1280) and not extras["pooled_output"][:, 32:].any()
    assert tuple(extras["conditioning_llama3"].shape) == (1, 4, 128, 32)
    (t5, extras), = cap["oc"]
    assert tuple(t5.shape) == (1, 128, 40) and tuple(extras["conditioning_llama3"].shape) == (1, 32, 1, 4096)
    model = kit.unwrap(cap["m"])
    for cond in (cap["dc"], cap["oc"], [(torch.zeros(1, 128, 40), {"pooled_output": torch.zeros(1, 80)})]):
        with pytest.raises(ValueError, match="QuadrupleCLIPLoader"):
            HiDreamDenoiser(model, cond, [], 1.0, torch.float32, "cpu")


def test_missing_llama_tokenizer_says_where_to_put_it(tiny, tmp_path):
    from nodegraph.diffusion.hidream.loading import llama_tokenizer

    with pytest.raises(FileNotFoundError, match="Meta's licence.*tokenizer/"):
        llama_tokenizer(tmp_path / ENCODERS[3])
    assert llama_tokenizer(tiny.home / "models" / "text_encoders" / ENCODERS[3]).pad_token == "<|eot_id|>"


def _saved_before_style(stem: str, class_type: str, error: dict) -> bool:
    """hidream_e1_example was saved before DualCFGGuider had "style", which ComfyUI v0.8.0 requires as well."""
    return (stem, error["extra_info"].get("input_name"), error["type"]) == \
        ("hidream_e1_example", "style", "required_input_missing")


def test_examples_validate_but_for_missing_files(tmp_path):
    checked, _, _ = kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path, allow=_saved_before_style)
    assert {"hidream_dev_example", "hidream_full_example", "hidream_e1_example", "hidream_e1.1_example"} == \
        set(checked)


@pytest.mark.parametrize("example", ["hidream_dev_example", "hidream_full_example", "hidream_e1.1_example"])
def test_examples_run_on_the_tiny_model(tiny, tmp_path, example):
    """I1 dev/full (KSampler) and E1.1 (InstructPixToPix + DualCFGGuider nested + CFGNorm on a flow model)."""
    prompt = kit.load_example(Path(__file__).parent / "hidream_examples" / f"{example}.json")
    folder = tiny.home / "models" / "diffusion_models"
    kit.shrink(prompt, {
        "EmptySD3LatentImage": {"width": SIZE, "height": SIZE}, "KSampler": {"steps": 2},
        "BasicScheduler": {"steps": 2},
        "ImageScaleToTotalPixels": {"megapixels": 0.01},  # the minimum: 96×96 from the 64×64 input
        # E1.1: the same architecture under the example's file name
        "UNETLoader": lambda inputs: kit.copy_as(folder, "hidream_i1_dev_bf16.safetensors", inputs["unet_name"]),
        "LoadImage": lambda inputs: kit.save_picture(tiny.home / "input" / inputs["image"], (SIZE, SIZE),
                                                     (200, 40, 40))})
    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (96, 96) if example == "hidream_e1.1_example" else (SIZE, SIZE))


def test_token_input_equals_the_latent_input(engine, tiny):
    """The unpadded patch-token path (large non-square latents, HiDream-E1's edit input) equals the pipeline's
    latent input on a square latent, where neither pads: same patch order, positions and output layout."""
    from nodegraph.diffusion.hidream.sampling import HiDreamDenoiser

    model = kit.unwrap(kit.run(engine, {"unet": graph()["unet"], "m": kit.capture("unet")})["m"])
    cond = [(torch.randn(1, 128, 40), {"pooled_output": torch.randn(1, 80),
                                       "conditioning_llama3": torch.randn(1, 4, 128, 32)})]
    den = HiDreamDenoiser(model, cond, [], 1.0, torch.float32, "cpu")
    x = torch.randn(2, 16, 8, 8)
    kwargs = dict(timesteps=torch.full((2,), 500.0), encoder_hidden_states_t5=cond[0][0].repeat(2, 1, 1),
                  encoder_hidden_states_llama3=cond[0][1]["conditioning_llama3"].repeat(2, 1, 1, 1).movedim(1, 0),
                  pooled_embeds=cond[0][1]["pooled_output"].repeat(2, 1), return_dict=False)
    with torch.no_grad():
        latent_in = model.unet(hidden_states=x, **kwargs)[0]
        tokens_in = model.unet(**den._tokens(x), **kwargs)[0]
        velocity = den._velocity(x, 0.5, den.conds[0])
    assert torch.allclose(latent_in, tokens_in, atol=1e-5)
    assert torch.allclose(velocity, -latent_in, atol=1e-6)  # model time sigma × 1000, velocity negated


def test_non_square_and_edit_input_run(engine):
    """A non-square image (padded to the model's maximum as the pipeline pads) and an InstructPixToPixConditioning
    source latent beside the latent (HiDream-E1's input) sample to images of the requested size."""
    wide = graph()
    wide["empty"]["inputs"].update(width=SIZE, height=SIZE // 2)
    assert tuple(kit.run(engine, wide)["img"].shape) == (1, SIZE // 2, SIZE, 3)
    images = []
    for color in (0x3080D0, 0xD08030):
        wf = graph()
        wf["pic"] = kit.empty_image(SIZE, SIZE, color)
        wf["ip2p"] = kit.node("InstructPixToPixConditioning", positive=["pos", 0], negative=["neg", 0], vae=["vae", 0],
                          pixels=["pic", 0])
        wf["ks"]["inputs"].update(positive=["ip2p", 0], negative=["ip2p", 1], latent_image=["ip2p", 2])
        images.append(kit.run(engine, wf)["img"])
    assert images[0].shape == (1, SIZE, SIZE, 3) and bool(torch.isfinite(images[0]).all())
    assert kit.max_diff(images[0], images[1]) > 1e-4  # the source image steers the result


def test_scaled_fp8_llama_loads_unscaled_and_comfy_quant_is_refused(tiny):
    """A ComfyUI "fp8_scaled" Llama (float8 weights + scale_weight) loads as weights × scale; a per-layer quantised
    (comfy_quant) file is refused naming the files that load."""
    from safetensors.torch import load_file, save_file

    from nodegraph.diffusion.detect import UnknownModelError
    from nodegraph.diffusion.hidream.loading import load_hidream_clips

    folder = tiny.home / "models" / "text_encoders"
    state = load_file(str(folder / ENCODERS[3]))
    scaled = kit.scaled_fp8(state, lambda key, value: key.endswith("proj.weight"))
    path = folder / "llama_tiny_fp8_scaled.safetensors"
    save_file(scaled, str(path))
    quant = folder / "llama_tiny_comfy_quant.safetensors"
    save_file(dict(state, **{"model.layers.0.mlp.up_proj.comfy_quant": torch.zeros(1, dtype=torch.uint8)}),
              str(quant))
    try:
        model = load_hidream_clips([path], [path.name]).encoders[3]
        ours = model.state_dict()["layers.0.self_attn.q_proj.weight"]
        ref = tiny.llama.model.state_dict()["layers.0.self_attn.q_proj.weight"]
        assert ours.dtype == torch.float32
        assert not torch.equal(ours, ref) and torch.allclose(ours, ref, atol=0.1 * float(ref.abs().max()))
        with pytest.raises(UnknownModelError, match="comfy_quant"):
            load_hidream_clips([quant], [quant.name])
    finally:
        path.unlink()
        quant.unlink()
