"""HunyuanVideo 1.0 through our nodes equals diffusers: weights loaded from each layout, and the frames of the graph
UNETLoader + DualCLIPLoader(hunyuan_video) + VAELoader + CLIPTextEncode + FluxGuidance + ModelSamplingSD3 +
EmptyHunyuanLatentVideo + KSampler (euler/simple, cfg 1) + VAEDecode against HunyuanVideoPipeline with the same noise,
≤ 1/255. ComfyUI_examples' HunyuanVideo workflows (copied into hunyuan_video_examples/ from
comfyanonymous/ComfyUI_examples at f9431bb) validate with only the model files missing, and the text-to-video one
runs on the tiny model saved under its file names. The shipped configs are checked by parameter count."""

from __future__ import annotations

import shutil
from pathlib import Path

import family_kit as kit
import pytest
import torch
from hunyuan_video_tiny import (
    I2V_FILE,
    LAYOUTS,
    LLAMA_FILE,
    VAE_FILES,
    build,
)
from safetensors.torch import load_file

from nodegraph.api import Node, Output
from nodegraph.diffusion.hunyuan_video.files import (
    load_hunyuan_video_transformer,
    parameter_counts,
)
from nodegraph.diffusion.hunyuan_video.text import TEMPLATE
from nodegraph.diffusion.hunyuan_video.vae import hunyuan_video_vae_from_state
from nodegraph.executor import NodeExecutionError
from nodegraph.testing_graphs import capture_engine

PROMPT = "a red cat walking on the sky"
SEED, STEPS, SIZE, LENGTH, GUIDANCE, SHIFT = 7, 4, 32, 5, 6.0, 7.0
EXAMPLES = Path(__file__).parent / "hunyuan_video_examples"
FILE_INPUTS = {"unet_name", "clip_name", "clip_name1", "clip_name2", "vae_name", "image"}


tiny = kit.tiny_fixture(build, "tiny-hunyuan-video-home")
engine = kit.engine_fixture("tiny")


def graph(unet: str = LAYOUTS["comfyui"], vae: str = VAE_FILES["comfyui"], shift: float = SHIFT,
          guidance: float = GUIDANCE) -> dict:
    """ComfyUI's HunyuanVideo text-to-video graph with KSampler (frames captured as "img", the latent as "lat")."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("DualCLIPLoader", clip_name1="clip_l.safetensors", clip_name2=LLAMA_FILE, type="hunyuan_video",
                     device="default"),
        "vae": kit.node("VAELoader", vae_name=vae),
        "pos": kit.encode(PROMPT),
        "guide": kit.node("FluxGuidance", conditioning=["pos", 0], guidance=guidance),
        "neg": kit.encode(""),
        "msd3": kit.node("ModelSamplingSD3", model=["unet", 0], shift=shift),
        "empty": kit.node("EmptyHunyuanLatentVideo", width=SIZE, height=SIZE, length=LENGTH, batch_size=1),
        "ks": kit.ksampler("msd3", SEED, STEPS, 1.0, positive=["guide", 0]),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
        "lat": kit.capture("ks"),
    }


@pytest.fixture(scope="module")
def reference(tiny):
    """HunyuanVideoPipeline's frames [F, H, W, 3] with the noise our KSampler draws for SEED; the template's
    leading tokens counted here by tokenizing the template's head alone."""
    frames = (LENGTH - 1) // 4 + 1
    noise = kit.seeded_noise((1, 16, frames, SIZE // 8, SIZE // 8), SEED)
    crop = len(tiny.tokenizer(TEMPLATE.split("{}")[0]).input_ids)
    pipe = tiny.pipeline(SHIFT, STEPS)
    with torch.no_grad():
        out = pipe(PROMPT, height=SIZE, width=SIZE, num_frames=LENGTH, num_inference_steps=STEPS,
                   guidance_scale=GUIDANCE, latents=noise, output_type="pt",
                   prompt_template={"template": TEMPLATE, "crop_start": crop}).frames
    return out[0].permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_transformer_layouts_load_the_same_weights(tiny, layout):
    path = tiny.home / "models" / "diffusion_models" / LAYOUTS[layout]
    model = load_hunyuan_video_transformer(path, None, path.name)
    assert model.family == "hunyuan_video" and model.arch == "hunyuan-video-t2v"
    got, want = model.unet.state_dict(), tiny.transformer.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_vae_encodes_an_image_batch_as_one_clip(tiny):
    path = tiny.home / "models" / "vae" / VAE_FILES["comfyui"]
    vae = hunyuan_video_vae_from_state(load_file(str(path)), path.name).vae
    frames = torch.rand(LENGTH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        got = vae.encode(frames).latent_dist.mean
        want = tiny.vae.encode(frames.movedim(0, 1).unsqueeze(0)).latent_dist.mode()
        decoded = vae.decode(got).sample
    assert got.shape == (1, 16, (LENGTH - 1) // 4 + 1, SIZE // 8, SIZE // 8) and torch.equal(got, want)
    assert decoded.shape == (LENGTH, 3, SIZE, SIZE)


@pytest.mark.parametrize("layout", sorted(VAE_FILES))
def test_vae_layouts_load_the_same_weights(tiny, layout):
    path = tiny.home / "models" / "vae" / VAE_FILES[layout]
    vae = hunyuan_video_vae_from_state(load_file(str(path)), path.name)
    got, want = vae.vae.inner.state_dict(), tiny.vae.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def direct(tiny):
    """(MODEL, positive with FluxGuidance's value, empty video LATENT, decode: latent -> frames [F, H, W, 3]) from
    the loaders and prompt encoder called directly (no engine, so no previews)."""
    from nodegraph.diffusion.hunyuan_video.text import (
        encode_hunyuan_video,
        load_hunyuan_clip,
    )

    models = tiny.home / "models"
    model = load_hunyuan_video_transformer(models / "diffusion_models" / LAYOUTS["comfyui"], None, "tiny")
    te = models / "text_encoders"
    clip = load_hunyuan_clip([te / LLAMA_FILE, te / "clip_l.safetensors"], [LLAMA_FILE, "clip_l.safetensors"])
    positive = [(emb, dict(extras, guidance=GUIDANCE)) for emb, extras in encode_hunyuan_video(clip, PROMPT, "cpu")]
    latent = {"samples": torch.zeros(1, 16, (LENGTH - 1) // 4 + 1, SIZE // 8, SIZE // 8), "downscale": 8}
    vae = hunyuan_video_vae_from_state(load_file(str(models / "vae" / VAE_FILES["comfyui"])), "vae")

    def decode(samples: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (vae.vae.decode(samples).sample / 2 + 0.5).clamp(0, 1).movedim(1, -1)

    return model, positive, latent, decode


def test_sampling_equals_hunyuan_video_pipeline(direct, reference):
    """KSampler's loop (the shared flow loop with HunyuanVideoDenoiser) against the pipeline."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow.sampling import sample
    from nodegraph.diffusion.sampling import SamplingOptions

    model, positive, latent, decode = direct
    out = sample(model, positive, [], latent, SamplingOptions("euler", "simple", STEPS, 1.0, SEED),
                 DeviceManager(force_cpu=True))
    frames = decode(out["samples"])
    assert frames.shape == reference.shape
    assert float((frames - reference).abs().max()) <= 1 / 255


def test_custom_sampling_equals_hunyuan_video_pipeline(direct, reference):
    """SamplerCustomAdvanced's loop (BasicGuider, BasicScheduler simple, euler, RandomNoise), as the example."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow.custom import model_schedule, sample_custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import BasicGuider, RandomNoise

    model, positive, latent, decode = direct
    out, denoised = sample_custom(BasicGuider(model, positive), euler, model_schedule(model, "simple", STEPS, 1.0),
                                  RandomNoise(SEED), latent, DeviceManager(force_cpu=True), model=model)
    assert denoised["samples"].shape == out["samples"].shape
    assert float((decode(out["samples"]) - reference).abs().max()) <= 1 / 255


def test_fp8_storage_samples(direct, tiny):
    """UNETLoader's weight_dtype fp8_e4m3fn: float8 weights, computed in float32 (close to the full weights)."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow.sampling import sample
    from nodegraph.diffusion.sampling import SamplingOptions

    model, positive, latent, _ = direct
    path = tiny.home / "models" / "diffusion_models" / LAYOUTS["comfyui"]
    fp8 = load_hunyuan_video_transformer(path, None, path.name, "fp8_e4m3fn")
    assert fp8.unet.transformer_blocks[0].attn.to_q.weight.dtype == torch.float8_e4m3fn
    opts = SamplingOptions("euler", "simple", 2, 1.0, SEED)
    got = sample(fp8, positive, [], latent, opts, DeviceManager(force_cpu=True))["samples"]
    want = sample(model, positive, [], latent, opts, DeviceManager(force_cpu=True))["samples"]
    assert 0 < float((got - want).abs().max()) < 0.2 * float(want.abs().max())


def test_fp8_scaled_llama_loads_unscaled(tiny, tmp_path):
    """ComfyUI's llava_llama3_fp8_scaled layout: float8 weights with per-tensor scale_weight, and the marker."""
    from nodegraph.diffusion.detect import read_header
    from nodegraph.diffusion.hunyuan_video.text import llama_from_state

    state = {"model." + k: v.clone() for k, v in tiny.llama.state_dict().items()}
    want = {}
    for key in [k for k in state if ".layers." in k and k.endswith("proj.weight")]:
        w = state[key]
        scale = w.abs().max() / 448.0
        state[key] = (w / scale).to(torch.float8_e4m3fn)
        state[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        want[key[len("model."):]] = state[key].float() * scale
    state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "llava_llama3_fp8_scaled.safetensors"))
    model = llama_from_state(load_file(str(tmp_path / "llava_llama3_fp8_scaled.safetensors")),
                             read_header(tmp_path / "llava_llama3_fp8_scaled.safetensors"), "fp8")
    got = model.state_dict()
    assert want and all(torch.equal(got[k], want[k]) for k in want)
    assert torch.equal(got["norm.weight"], tiny.llama.state_dict()["norm.weight"])


def test_graph_frames_equal_hunyuan_video_pipeline(engine, reference):
    kit.assert_video_run(engine, graph(), reference, (LENGTH, SIZE, SIZE, 3), (1, 16, 2, SIZE // 8, SIZE // 8),
                         "hunyuan video tiny run")


def test_diffusers_layout_files_give_the_same_frames(engine, reference):
    cap = kit.run(engine, graph(LAYOUTS["diffusers"], VAE_FILES["diffusers"]))
    assert kit.max_diff(cap["img"], reference) <= 1 / 255


def test_guidance_and_shift_change_the_frames(engine, reference):
    for wf in (graph(guidance=1.0), graph(shift=1.0)):
        assert kit.max_diff(kit.run(engine, wf)["img"], reference) > 1 / 255


def test_missing_llama_tokenizer_names_the_folder(tiny, tmp_path):
    from nodegraph.diffusion.hunyuan_video.text import llama_tokenizer

    shutil.copy(tiny.home / "models" / "text_encoders" / LLAMA_FILE, tmp_path / LLAMA_FILE)
    with pytest.raises(FileNotFoundError, match="tokenizer/ folder"):
        llama_tokenizer(tmp_path / LLAMA_FILE)


def test_examples_validate_but_for_missing_files(tmp_path):
    checked, _, _ = kit.validate_examples(sorted(EXAMPLES.glob("*.json")), FILE_INPUTS, tmp_path)
    assert len(checked) == 3


def test_text_to_video_example_runs_on_the_tiny_model(tiny, tmp_path):
    models = tiny.home / "models"
    kit.copy_as(models / "diffusion_models", LAYOUTS["comfyui"], "hunyuan_video_t2v_720p_bf16.safetensors")
    kit.copy_as(models / "text_encoders", LLAMA_FILE, "llava_llama3_fp8_scaled.safetensors")
    kit.copy_as(models / "vae", VAE_FILES["comfyui"], "hunyuan_video_vae_bf16.safetensors")
    path = EXAMPLES / "hunyuan_video_text_to_video.json"
    files = kit.run_example(tiny.home, tmp_path / "out", lambda engine: kit.shrink(
        kit.load_example(path, engine.registry), {
        "EmptyHunyuanLatentVideo": {"width": SIZE, "height": SIZE, "length": LENGTH}, "BasicScheduler": {"steps": 2}}))
    kit.assert_animation(next(p for p in files if p.suffix == ".webp"), (SIZE, SIZE), LENGTH)


def _start_image(height: int = 40, width: int = 48) -> torch.Tensor:
    """A seeded random IMAGE [1, H, W, 3] on the 8-bit grid (what a PNG start image holds)."""
    return torch.randint(0, 256, (1, height, width, 3), generator=torch.Generator().manual_seed(0)) / 255.0


class StartImage(Node):
    """A fixed 40×48 random IMAGE."""

    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx):
        return (_start_image(),)


class SquareImage(Node):
    """A fixed SIZE×SIZE random IMAGE."""

    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx):
        return (_start_image(SIZE, SIZE),)


class OneCond(Node):
    """A one-entry CONDITIONING of zeros."""

    OUTPUTS = (Output("CONDITIONING"),)

    def execute(self, ctx):
        return ([(torch.zeros(1, 4, 128), {"pooled_output": torch.zeros(1, 64)})],)


class FakeVisionOutput(Node):
    """A CLIP_VISION_OUTPUT without llava's projected tokens (what CLIPVisionEncode gives today)."""

    OUTPUTS = (Output("CLIP_VISION_OUTPUT"),)

    def execute(self, ctx):
        return (object(),)


def test_image_to_video_text_encoder_refuses_with_the_fix(tiny):
    engine = capture_engine(kit.home_config(tiny.home), (FakeVisionOutput,))
    wf = {"clip": graph()["clip"], "vision": kit.node("FakeVisionOutput"),
          "enc": kit.node("TextEncodeHunyuanVideo_ImageToVideo", clip=["clip", 0], clip_vision_output=["vision", 0],
                      prompt=PROMPT, image_interleave=2),
          "out": kit.capture("enc")}
    with pytest.raises(NodeExecutionError, match="CLIPTextEncode"):
        kit.run(engine, wf)


@pytest.mark.parametrize("kind", ["v1 (concat)", "v2 (replace)", "custom"])
def test_image_to_video_node_conditions_and_latent(tiny, kind):
    engine = capture_engine(kit.home_config(tiny.home), (StartImage, OneCond))
    wf = {"vae": kit.node("VAELoader", vae_name=VAE_FILES["comfyui"]), "start": kit.node("StartImage"),
          "cond": kit.node("OneCond"),
          "i2v": kit.node("HunyuanImageToVideo", positive=["cond", 0], vae=["vae", 0], width=SIZE, height=SIZE,
                          length=9,
                      batch_size=1, guidance_type=kind, start_image=["start", 0]),
          "pos": kit.capture("i2v"), "lat": kit.capture("i2v", 1)}
    if kind == "v2 (replace)":
        with pytest.raises(NodeExecutionError, match="v1 \\(concat\\)"):
            kit.run(engine, wf)
        return
    cap = kit.run(engine, wf)
    extras, latent = cap["pos"][0][1], cap["lat"]
    assert latent["samples"].shape == (1, 16, 3, SIZE // 8, SIZE // 8)
    if kind == "v1 (concat)":
        assert extras["concat_latent_image"].shape == (1, 16, 1, SIZE // 8, SIZE // 8)
        assert extras["concat_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0, 1.0]
        assert not bool(latent["samples"].any())
    else:
        assert extras["ref_latent"].shape == (1, 16, 1, SIZE // 8, SIZE // 8)


def test_image_to_video_v1_equals_pipeline(tiny):
    """HunyuanImageToVideo "v1 (concat)" + the concat model sampled by the shared loop, against
    HunyuanVideoImageToVideoPipeline given the same prompt states (its llava image tokens are not ours yet) and our
    start noise (the pipeline mixes 0.1 % of the image into the noise, which ComfyUI does not: undone here); the
    pipeline drops the first 4 frames it decodes."""
    import numpy as np
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoImageToVideoPipeline,
    )
    from PIL import Image
    from transformers import CLIPImageProcessor

    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow.sampling import sample
    from nodegraph.diffusion.sampling import SamplingOptions

    length = 9
    engine = capture_engine(kit.home_config(tiny.home), (SquareImage,))
    wf = {"clip": graph()["clip"], "pos": graph()["pos"], "vae": kit.node("VAELoader", vae_name=VAE_FILES["comfyui"]),
          "start": kit.node("SquareImage"),
          "i2v": kit.node("HunyuanImageToVideo", positive=["pos", 0], vae=["vae", 0], width=SIZE, height=SIZE,
                      length=length, batch_size=1, guidance_type="v1 (concat)", start_image=["start", 0]),
          "cond": kit.capture("i2v"), "lat": kit.capture("i2v", 1)}
    cap = kit.run(engine, wf)
    model = load_hunyuan_video_transformer(tiny.home / "models" / "diffusion_models" / I2V_FILE, None, I2V_FILE)
    assert model.arch == "hunyuan-video-i2v"
    opts = SamplingOptions("euler", "simple", STEPS, 1.0, SEED)
    out = sample(model, cap["cond"], [], cap["lat"], opts, DeviceManager(force_cpu=True))
    with torch.no_grad():
        frames = tiny.vae.decode(out["samples"]).sample[0].movedim(0, 1)
    frames = (frames / 2 + 0.5).clamp(0, 1).movedim(1, -1)

    emb, extras = cap["cond"][0]
    image = extras["concat_latent_image"] * tiny.vae.config.scaling_factor
    noise = kit.seeded_noise(tuple(cap["lat"]["samples"].shape), SEED)
    t = torch.tensor([0.999])
    start = (noise - image.repeat(1, 1, noise.shape[2], 1, 1) * (1 - t)) / t
    pipe = HunyuanVideoImageToVideoPipeline(text_encoder=None, tokenizer=tiny.tokenizer, transformer=tiny.i2v,
                                            vae=tiny.vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT),
                                            text_encoder_2=tiny.clip, tokenizer_2=None,
                                            image_processor=CLIPImageProcessor())
    pil = Image.fromarray(np.round(_start_image(SIZE, SIZE)[0].numpy() * 255).astype(np.uint8))
    with torch.no_grad():
        ref = pipe(image=pil, prompt_embeds=emb, pooled_prompt_embeds=extras["pooled_output"],
                   prompt_attention_mask=torch.ones(emb.shape[:2]), height=SIZE, width=SIZE, num_frames=length,
                   num_inference_steps=STEPS, guidance_scale=1.0, latents=start, output_type="pt").frames[0]
    ref = ref.permute(0, 2, 3, 1).float()
    assert frames.shape == (length, SIZE, SIZE, 3) and ref.shape == (length - 4, SIZE, SIZE, 3)
    diff = kit.max_diff(frames[4:], ref)
    print(f"hunyuan video i2v (v1 concat) max |diff| {diff:.2e}")
    assert diff <= 1 / 255 and float(ref.std()) > 0.01


@pytest.mark.parametrize(("extra", "patch", "message"), [
    ({"cond_type_embedding.weight": (3, 128)}, (128, 32, 1, 1, 1), "HunyuanVideo 1.5"),
    ({}, (128, 64, 1, 1), "HunyuanImage")])
def test_other_hunyuan_versions_are_refused_with_the_reason(extra, patch, message):
    from nodegraph.diffusion.detect import UnknownModelError
    from nodegraph.diffusion.hunyuan_video.files import transformer_from_state

    state = {"model.diffusion_model.txt_in.individual_token_refiner.blocks.0.norm1.weight": torch.zeros(128),
             "model.diffusion_model.img_in.proj.weight": torch.zeros(patch)}
    state.update({"model.diffusion_model." + k: torch.zeros(v) for k, v in extra.items()})
    with pytest.raises(UnknownModelError, match=message):
        transformer_from_state(state, "other.safetensors")


def test_configs_match_the_published_sizes():
    counts = parameter_counts()
    print(f"\nhunyuan video configs: {counts}")
    # HunyuanVideo's transformer is published as 13B parameters (12.82B counted)
    assert 12.7e9 < counts["transformer_t2v_720p"] < 13.0e9
    assert 0.2e9 < counts["vae"] < 0.3e9  # the causal 3D VAE (~246M)
    assert 7.4e9 < counts["text_encoder_llama"] < 7.6e9  # Llama-3-8B without its LM head (vocabulary 128,320)
