"""Cosmos Predict2 text-to-image through our nodes equals diffusers: each file loads with the diffusers modules'
weights, and the graph UNETLoader + CLIPLoader(cosmos) + VAELoader + CLIPTextEncode + EmptySD3LatentImage + KSampler
(euler/karras) + VAEDecode gives Cosmos2TextToImagePipeline's image (Karras sigmas ending at 0) with the same noise,
≤ 1/255. ComfyUI's EDM sigmas (simple, karras, normal) come from CosmosFlow as ComfyUI computes them. ComfyUI_examples'
cosmos_predict2 t2i graph validates with only the model files missing, and runs on the tiny model."""

from __future__ import annotations

import types
from pathlib import Path

import family_kit as kit
import numpy as np
import pytest
import torch
from cosmos_tiny import (
    LAYOUTS,
    TEXT_ENCODER,
    VAE_FILE,
    VIDEO_FILE,
    TinyCosmos,
    build,
    decode,
)

PROMPT = "a photo of the red cat on the sky"
NEGATIVE = "the green tree"
SEED, STEPS, SIZE = 7, 3, 64
EXAMPLES = sorted((Path(__file__).parent / "cosmos_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image"}


def _nearest_resize_shim() -> None:
    """diffusers' CosmosTransformer3DModel resizes its padding mask with torchvision, which is not installed here:
    a stand-in with torchvision's nearest resize of a tensor (the mask is all zeros, so any resize is exact)."""
    import diffusers.models.transformers.transformer_cosmos as module

    if hasattr(module, "transforms"):
        return

    def resize(x, size, interpolation=None):
        return torch.nn.functional.interpolate(x, size=list(size), mode="nearest")

    module.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                              InterpolationMode=types.SimpleNamespace(NEAREST="nearest"))


tiny_cosmos = kit.tiny_fixture(build, "tiny-cosmos-home")
engine = kit.engine_fixture("tiny_cosmos")


def graph(unet: str = LAYOUTS["comfyui"], cfg: float = 1.0, scheduler: str = "karras") -> dict:
    """ComfyUI's cosmos_predict2 text-to-image graph, image captured as "img"."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name=TEXT_ENCODER, type="cosmos", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "pos": kit.encode(PROMPT),
        "neg": kit.encode(NEGATIVE),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("unet", SEED, STEPS, cfg, scheduler=scheduler),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


def _reference(tiny: TinyCosmos, cfg: float) -> torch.Tensor:
    """The pipeline's image for our KSampler's noise; its guidance_scale g is ComfyUI's cfg g + 1 (it guides as
    cond + g (cond - uncond))."""
    _nearest_resize_shim()
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        latents = tiny.pipeline()(PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE,
                                  num_inference_steps=STEPS, guidance_scale=cfg - 1.0, latents=noise[:, :, None],
                                  output_type="latent").images
    return decode(tiny.vae, latents[:, :, None])[:1]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny_cosmos, layout):
    cap = kit.run(engine, kit.add_captures({"unet": graph(LAYOUTS[layout])["unet"], "clip": graph()["clip"]},
                                   m="unet", c="clip"))
    model, clip = kit.unwrap(cap["m"]), kit.unwrap(cap["c"])
    assert model.family == "cosmos" and model.flow.kind == "cosmos" and model.arch == "cosmos-predict2-t2i"
    for ours, ref in ((model.unet, tiny_cosmos.transformer), (clip.encoders[0], tiny_cosmos.text_encoder)):
        kit.assert_same_weights(ours, ref)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_graph_image_equals_cosmos2_pipeline(engine, tiny_cosmos, cfg):
    kit.assert_parity(kit.run(engine, graph(cfg=cfg))["img"], _reference(tiny_cosmos, cfg),
                  f"Cosmos Predict2 parity (cfg {cfg}) vs Cosmos2TextToImagePipeline")


def test_edm_sigmas_are_comfyuis():
    """ComfyUI's ModelSamplingCosmosRFlow schedules: simple picks the log-spaced table (0.002 … 80), karras spans
    its ends, normal is linear in t = sigma / (sigma + 1); all end at 0."""
    from nodegraph.diffusion.cosmos.sampling import CosmosFlow, to_t
    from nodegraph.diffusion.flow.schedule import flow_sigmas

    flow = CosmosFlow()
    table = np.exp(np.linspace(np.log(0.002), np.log(80.0), 1000, dtype=np.float32)).astype(np.float64)
    simple = flow_sigmas("simple", 4, flow)
    assert np.allclose(simple[:-1], [table[-1 - int(i * 250)] for i in range(4)], rtol=1e-5) and simple[-1] == 0
    karras = flow_sigmas("karras", 3, flow)
    assert karras[0] == pytest.approx(80.0, rel=1e-5) and karras[2] == pytest.approx(0.002, rel=1e-4)
    normal = flow_sigmas("normal", 3, flow)
    assert np.allclose(normal[:-1] / (1 + normal[:-1]), np.linspace(80 / 81, 0.002 / 1.002, 3), atol=1e-6)
    assert torch.allclose(to_t(torch.tensor([80.0, 1.0, 0.0])), torch.tensor([80 / 81, 0.5, 0.0]))
    assert flow.percent_to_sigma(0.5) == pytest.approx(np.sqrt(0.002 * 80), rel=1e-4)


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler's EDM SIGMAS + BasicGuider + euler (CUSTOM_SAMPLERS → the shared loop) equals KSampler."""
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.guiders import BasicGuider

    cap = kit.run(engine, kit.add_captures(graph(), lat="ks", cond="pos", model="unet", empty_lat="empty"))
    model = kit.unwrap(cap["model"])
    assert float(custom.model_schedule(model, "karras", STEPS, 1.0)[0]) == pytest.approx(80.0, rel=1e-5)
    out, _ = kit.custom_sample(model, BasicGuider(model, cap["cond"]), cap["empty_lat"], STEPS, SEED, "karras")
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_scheduler_cfg_and_prompt_change_the_image(engine):
    """The parity above would not see a wrong schedule, guidance or prompt encoding if they did not matter."""
    base = kit.run(engine, graph())["img"]
    other = graph()
    other["pos"]["inputs"]["text"] = "blue square"
    for wf in (graph(scheduler="simple"), graph(cfg=3.0), other):
        assert kit.max_diff(kit.run(engine, wf)["img"], base) > 1 / 255


def test_foreign_conditioning_and_wrong_text_encoder_are_clear(engine, tiny_cosmos, tmp_path):
    from nodegraph.diffusion.cosmos.sampling import CosmosDenoiser, rf_view

    model = kit.unwrap(kit.run(engine, {"unet": graph()["unet"], "m": kit.capture("unet")})["m"])
    with pytest.raises(ValueError, match="type cosmos"):  # e.g. a CLIP-L conditioning
        CosmosDenoiser(rf_view(model), [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    denoiser = CosmosDenoiser(rf_view(model), [(torch.zeros(1, 512, 32), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(ValueError, match="16-channel"):  # e.g. an SD latent
        denoiser(torch.zeros(1, 4, 8, 8), 0.5)


def test_empty_cosmos_latent_video_shape(engine):
    wf = {"e": kit.node("EmptyCosmosLatentVideo", width=64, height=48, length=17, batch_size=2), "l": kit.capture("e")}
    assert tuple(kit.run(engine, wf)["l"]["samples"].shape) == (2, 16, 3, 6, 8)


def test_examples_validate_but_for_missing_files(tmp_path):
    kit.validate_examples(EXAMPLES, FILE_INPUTS, tmp_path)


@pytest.mark.slow
def test_t2i_example_runs_on_the_tiny_model(tiny_cosmos, tmp_path):
    prompt = kit.load_example(Path(__file__).parent / "cosmos_examples" / "cosmos_predict2_2b_t2i_example.json")
    kit.shrink(prompt, {"EmptySD3LatentImage": {"width": 64, "height": 64}, "KSampler": {"steps": 2}})
    kit.run_example(tiny_cosmos.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (64, 64))


@pytest.mark.parametrize("variant,count", [("t2i_2B", 1_956_405_248), ("t2i_14B", 14_265_265_152),
                                           ("v2w_2B", 1_956_413_440), ("v2w_14B", 14_265_285_632)])
def test_shipped_configs_have_the_published_sizes(variant, count):
    """Cosmos Predict2 2B and 14B (NVIDIA's model cards: 2B, 14B); full-size NVIDIA names (on the meta device)
    are detected back to the shipped config of the variant."""
    from cosmos_tiny import to_original
    from diffusers import CosmosTransformer3DModel

    from nodegraph.diffusion.cosmos.detect import (
        shipped_config,
        transformer_config,
        transformer_layout,
    )

    shipped = shipped_config(f"transformer_{variant}")
    model = kit.on_meta(lambda: CosmosTransformer3DModel.from_config(shipped))
    assert kit.parameter_count(model) == count
    shapes = {k: tuple(v.shape) for k, v in to_original(model.state_dict()).items()}
    layout = transformer_layout(shapes)
    assert layout == ("net.", "original")
    config = transformer_config(shapes, *layout)[0]
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()} == shipped


def test_old_t5_config_has_the_published_size():
    """T5 v1.0 XXL's encoder (the 11B model's, Cosmos's text encoder): 4.9B parameters, ReLU feed-forward."""
    from transformers import T5Config, T5EncoderModel

    from nodegraph.diffusion.cosmos.detect import shipped_config

    model = kit.on_meta(lambda: T5EncoderModel(T5Config(**shipped_config("t5_old_xxl"))))
    assert kit.parameter_count(model) == 4_897_690_624


LENGTH, COLOR = 9, 0x3080D0


def video_graph(cfg: float = 1.0) -> dict:
    """ComfyUI's cosmos_predict2 image-to-video graph on an EmptyImage start, frames captured as "img"."""
    wf = graph(VIDEO_FILE, cfg=cfg)
    wf["picture"] = kit.empty_image(SIZE, SIZE, COLOR)
    wf["empty"] = kit.node("CosmosPredict2ImageToVideoLatent", vae=["vae", 0], width=SIZE, height=SIZE, length=LENGTH,
                       batch_size=1, start_image=["picture", 0])
    return kit.add_captures(wf, pic="picture", lat="empty")


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_video2world_graph_equals_cosmos2_video_pipeline(engine, tiny_cosmos, cfg, monkeypatch):
    """CosmosPredict2ImageToVideoLatent + KSampler on the video2world model equals Cosmos2VideoToWorldPipeline:
    the start frame given (its posterior mean; the pipeline's draw is pinned to the mean here), sigma_conditioning
    0 (ComfyUI feeds the given frame clean at time 0), fps 24 = the rope's base fps (ComfyUI does not modulate)."""
    import diffusers.pipelines.cosmos.pipeline_cosmos2_video2world as v2w
    from PIL import Image

    cap = kit.run(engine, video_graph(cfg))
    latent = cap["lat"]
    assert tuple(latent["samples"].shape) == (1, 16, 3, SIZE // 8, SIZE // 8)
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0, 1.0]
    _nearest_resize_shim()
    monkeypatch.setattr(v2w, "retrieve_latents", lambda out, generator=None, sample_mode="sample":
                        out.latent_dist.mode())
    noise = kit.seeded_noise((1, 16, 3, SIZE // 8, SIZE // 8), SEED)
    picture = Image.fromarray((cap["pic"][0].numpy() * 255).round().astype("uint8"))
    with torch.no_grad():
        latents = tiny_cosmos.video_pipeline()(
            image=picture, prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=LENGTH,
            num_inference_steps=STEPS, guidance_scale=cfg - 1.0, fps=24, latents=noise, sigma_conditioning=0.0,
            output_type="latent").frames
    kit.assert_parity(cap["img"], decode(tiny_cosmos.vae, latents),
                  f"Cosmos Predict2 video2world parity (cfg {cfg}) vs Cosmos2VideoToWorldPipeline")


def test_video2world_start_image_steers_the_generated_frames(engine):
    """The given frame is kept, and the frames generated after it depend on it (so the parity above is a test of
    the conditioning, not only of the kept frame)."""
    a = kit.run(engine, video_graph())
    other = video_graph()
    other["picture"]["inputs"]["color"] = 0xD08030
    b = kit.run(engine, other)
    assert kit.max_diff(a["img"][1:], b["img"][1:]) > 1 / 255


@pytest.mark.slow
def test_i2v_example_runs_on_the_tiny_model(tiny_cosmos, tmp_path):
    """ComfyUI_examples' image-to-video graph (editor format) on the tiny video2world model: 9 frames at 64²."""
    path = Path(__file__).parent / "cosmos_examples" / "cosmos_predict2_2b_i2v_example.json"
    inputs = tiny_cosmos.home / "input"

    def prompt(engine):
        return kit.shrink(kit.load_example(path, engine.registry), {
            "CosmosPredict2ImageToVideoLatent": {"width": 64, "height": 64, "length": 9}, "KSampler": {"steps": 2},
            "LoadImage": lambda i: kit.save_picture(inputs / i["image"], (80, 64), (40, 120, 200))})

    assert kit.run_example(tiny_cosmos.home, tmp_path / "out", prompt), "the example saves its video"


def test_image_to_video_latent_start_and_end_frames(engine):
    """CosmosPredict2ImageToVideoLatent with a start and an end image: both latent frames given (mask 0), the frame
    between them to generate at the Wan latent mean (ComfyUI's process_out of zero)."""
    from nodegraph.diffusion.video_models.wan_vae import latent_stats

    wf = video_graph()
    wf["empty"]["inputs"]["end_image"] = ["picture", 0]
    cap = kit.run(engine, {k: wf[k] for k in ("vae", "picture", "empty", "lat")})
    latent = cap["lat"]
    assert latent["noise_mask"][0, 0, :, 0, 0].tolist() == [0.0, 1.0, 0.0]
    mean = latent_stats(16)[0]
    assert torch.allclose(latent["samples"][:, :, 1:2], mean.expand(1, 16, 1, SIZE // 8, SIZE // 8))
    assert torch.allclose(latent["samples"][:, :, 0], latent["samples"][:, :, 2], atol=1e-5)  # the same image
