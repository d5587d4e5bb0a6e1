"""Flux.2 [dev] through our nodes equals diffusers: each file layout loads with the diffusers modules' weights, and
the graphs UNETLoader + CLIPLoader(flux2) + VAELoader + CLIPTextEncode + FluxGuidance + EmptyFlux2LatentImage +
(SamplerCustomAdvanced with Flux2Scheduler | KSampler euler/simple) + VAEDecode give Flux2Pipeline's image with the
same noise and sigmas, ≤ 1/255. ComfyUI_examples' flux2 graph validates with only the model files missing and runs
on the tiny model saved under its file names."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from flux2_tiny import (
    LAYOUTS,
    TEXT_ENCODER,
    TEXT_ENCODER_HF,
    TEXT_LAYERS,
    VAE_DIFFUSERS,
    VAE_FILE,
    build,
)

PROMPT = "the cat on the red car"
SEED, STEPS, SIZE, GUIDANCE = 7, 3, 64, 2.5
EXAMPLE = Path(__file__).parent / "flux2_examples" / "flux2_example.json"
FILE_INPUTS = {"unet_name", "clip_name", "vae_name", "image"}


tiny = kit.tiny_fixture(build, "tiny-flux2-home")
engine = kit.engine_fixture("tiny")


def loaders(unet: str = LAYOUTS["comfyui"], clip: str = TEXT_ENCODER, vae: str = VAE_FILE) -> dict:
    return {"unet": kit.unet_loader(unet),
            "clip": kit.node("CLIPLoader", clip_name=clip, type="flux2", device="default"),
            "vae": kit.node("VAELoader", vae_name=vae)}


def graph(custom: bool = True, guidance: float = GUIDANCE) -> dict:
    """ComfyUI's Flux.2 text-to-image graph (custom: the ComfyUI_examples one), image captured as "img"."""
    wf = dict(loaders(), pos=kit.encode(PROMPT),
              guid=kit.node("FluxGuidance", conditioning=["pos", 0], guidance=guidance),
              empty=kit.empty_latent("EmptyFlux2LatentImage", SIZE), dec=kit.decode("s"), img=kit.capture("dec"))
    if custom:
        wf.update(
            noise=kit.node("RandomNoise", noise_seed=SEED),
            guider=kit.node("BasicGuider", model=["unet", 0], conditioning=["guid", 0]),
            sampler=kit.node("KSamplerSelect", sampler_name="euler"),
            sigmas=kit.node("Flux2Scheduler", steps=STEPS, width=SIZE, height=SIZE),
            s=kit.node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                   sigmas=["sigmas", 0], latent_image=["empty", 0]))
    else:
        wf.update(
            neg=kit.encode(""),
            s=kit.node("KSampler", model=["unet", 0], seed=SEED, steps=STEPS, cfg=1.0, sampler_name="euler",
                   scheduler="simple", positive=["guid", 0], negative=["neg", 0], latent_image=["empty", 0],
                   denoise=1.0))
    return wf


def _reference(tiny, sigmas=None) -> torch.Tensor:
    """Flux2Pipeline's image [1, H, W, 3] with our noise for SEED (its own schedule unless ``sigmas``)."""
    noise = kit.seeded_noise((1, 128, SIZE // 16, SIZE // 16), SEED)
    extra = {} if sigmas is None else {"sigmas": sigmas}
    with torch.no_grad():
        out = tiny.pipeline(dynamic=sigmas is None)(
            prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
            text_encoder_out_layers=TEXT_LAYERS, output_type="pt", **extra).images
    return kit.channels_last(out)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    clip, vae = (TEXT_ENCODER_HF, VAE_DIFFUSERS) if layout == "diffusers" else (TEXT_ENCODER, VAE_FILE)
    cap = kit.run(engine, kit.add_captures(loaders(LAYOUTS[layout], clip, vae), m="unet", c="clip", v="vae"))
    model, clip, vae = kit.unwrap(cap["m"]), kit.unwrap(cap["c"]), kit.unwrap(cap["v"])
    assert model.family == "flux2" and model.arch == "flux2-dev" and model.flow.shift == 2.02
    lm = tiny.text_encoder.model.language_model.state_dict()
    lm = {k: v for k, v in lm.items() if not k.startswith("layers.3.")}  # only layers 0-2 are read
    for ours, ref in ((model.unet, tiny.transformer), (clip.encoders[0], lm), (vae.vae.inner, tiny.vae)):
        kit.assert_same_weights(ours, ref, skip=lambda k: k == "norm.weight")  # the final norm is not read


def test_text_states_equal_the_pipeline(engine, tiny):
    cap = kit.run(engine, dict(loaders(), pos=kit.encode(PROMPT), c=kit.capture("pos")))
    ours = cap["c"][0][0]
    with torch.no_grad():
        ref, _ = tiny.pipeline().encode_prompt(PROMPT, device="cpu", text_encoder_out_layers=TEXT_LAYERS)
    assert ours.shape == ref.shape == (1, 512, 96)
    assert torch.allclose(ours, ref.float(), atol=1e-5)


def test_custom_sampling_graph_equals_flux2_pipeline(engine, tiny):
    """The ComfyUI_examples graph shape (Flux2Scheduler + SamplerCustomAdvanced) = Flux2Pipeline's defaults."""
    image = kit.run(engine, graph())["img"]
    assert image.shape == (1, SIZE, SIZE, 3)
    kit.assert_parity(image, _reference(tiny), "Flux.2 parity (Flux2Scheduler) vs Flux2Pipeline")


def test_ksampler_graph_equals_flux2_pipeline(engine, tiny):
    """KSampler euler/simple on the model's own shift (2.02, ComfyUI's Flux.2 default) = the pipeline given
    those sigmas."""
    sigmas = kit.simple_sigmas(STEPS, 2.02, kind="flux")
    image = kit.run(engine, graph(custom=False))["img"]
    kit.assert_parity(image, _reference(tiny, sigmas), "Flux.2 parity (KSampler) vs Flux2Pipeline")
    assert kit.max_diff(kit.run(engine, graph(guidance=6.0))["img"], image) > 1 / 255  # guidance matters


def test_scheduler_node_equals_the_pipeline_schedule(tiny):
    from nodegraph.diffusion.flux2.sampling import empirical_mu, flux2_sigmas

    pipe = tiny.pipeline()
    for steps, size in ((4, 64), (20, 1024), (50, 1536)):
        tokens = (size // 16) ** 2
        pipe.scheduler.set_timesteps(sigmas=[1.0 - i / steps for i in range(steps)], mu=empirical_mu(tokens, steps))
        ours = flux2_sigmas(steps, size, size)
        assert ours.shape == (steps + 1,) and float(ours[-1]) == 0.0
        assert torch.allclose(ours, pipe.scheduler.sigmas.float(), atol=1e-6)


def test_vae_round_trip_is_normalised(engine, tiny):
    """VAEEncode gives Flux2Pipeline's packed, batch-norm normalised latent (``_encode_vae_image``)."""
    wf = {"vae": loaders()["vae"], "pic": kit.empty_image(SIZE, SIZE, 0x3080D0),
          "enc": kit.node("VAEEncode", pixels=["pic", 0], vae=["vae", 0])}
    cap = kit.run(engine, kit.add_captures(wf, lat="enc", p="pic"))
    with torch.no_grad():
        ref = tiny.pipeline()._encode_vae_image(cap["p"].movedim(-1, 1) * 2 - 1, None)
    assert cap["lat"]["samples"].shape == (1, 128, SIZE // 16, SIZE // 16)
    assert torch.allclose(cap["lat"]["samples"], ref, atol=1e-5)


def _reference_image() -> dict:
    """EmptyImage → VAEEncode → ReferenceLatent on the guided positive."""
    return {"picture": kit.empty_image(SIZE, SIZE, 0x3080D0), "enc": kit.node("VAEEncode", pixels=["picture", 0],
                                                                      vae=["vae", 0]),
            "ref": kit.node("ReferenceLatent", conditioning=["guid", 0], latent=["enc", 0])}


def test_reference_latent_follows_the_pipeline_edit(engine, tiny):
    """ReferenceLatent (VAEEncode of an image) = Flux2Pipeline(image=...) multi-reference editing, "index" ids."""
    from PIL import Image

    wf = graph()
    wf.update(_reference_image())
    wf["guider"]["inputs"]["conditioning"] = ["ref", 0]
    image = kit.run(engine, wf)["img"]
    noise = kit.seeded_noise((1, 128, SIZE // 16, SIZE // 16), SEED)
    with torch.no_grad():
        ref = tiny.pipeline()(prompt=PROMPT, image=[Image.new("RGB", (SIZE, SIZE), (0x30, 0x80, 0xD0))], height=SIZE,
                              width=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise,
                              text_encoder_out_layers=TEXT_LAYERS, output_type="pt").images.permute(0, 2, 3, 1)
    diff = kit.max_diff(image, ref)
    effect = kit.max_diff(image, kit.run(engine, graph())["img"])  # what the reference changes
    print(f"Flux.2 edit parity: max |ours - Flux2Pipeline(image=)| = {diff:.2e}; the reference changes {effect:.2e}")
    assert diff <= 1 / 255 and diff < effect / 100


def test_missing_tokenizer_and_foreign_conditioning_are_clear(engine, tmp_path):
    from nodegraph.diffusion.flux2.loading import folder_tokenizer
    from nodegraph.diffusion.flux2.sampling import Flux2Denoiser

    model = kit.unwrap(kit.run(engine, kit.add_captures(loaders(), m="unet"))["m"])
    with pytest.raises(ValueError, match="flux2"):  # e.g. a CLIP-L conditioning
        Flux2Denoiser(model, [(torch.zeros(1, 77, 768), {})], [], 1.0, torch.float32, "cpu")
    with pytest.raises(FileNotFoundError, match="tokenizer/ folder"):
        folder_tokenizer(tmp_path / TEXT_ENCODER, "mistral")


def test_example_validates_but_for_missing_files(tmp_path):
    kit.validate_examples([EXAMPLE], FILE_INPUTS, tmp_path)


def test_example_runs_on_the_tiny_model(tiny, tmp_path):
    prompt = kit.shrink(kit.load_example(EXAMPLE), {
        "EmptyFlux2LatentImage": {"width": SIZE, "height": SIZE},
        "Flux2Scheduler": {"width": SIZE, "height": SIZE, "steps": 2},
        # the reference-image branch (bypassed in the example) still names its images
        "LoadImage": lambda inputs: kit.save_picture(tiny.home / "input" / inputs["image"], (SIZE, SIZE),
                                                     (200, 30, 30))})
    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (SIZE, SIZE))


def test_reference_method_node_places_the_references(engine):
    """FluxKontextMultiReferenceLatentMethod: "offset" places the reference differently from Flux.2's "index";
    "index_timestep_zero" is refused naming the methods that run."""
    wf = graph()
    wf.update(_reference_image())
    wf["method"] = kit.node("FluxKontextMultiReferenceLatentMethod", conditioning=["ref", 0],
                        reference_latents_method="index")
    wf["guider"]["inputs"]["conditioning"] = ["method", 0]
    index = kit.run(engine, wf)["img"]
    wf["method"]["inputs"]["reference_latents_method"] = "offset"
    assert kit.max_diff(kit.run(engine, wf)["img"], index) > 1e-4
    wf["method"]["inputs"]["reference_latents_method"] = "index_timestep_zero"
    with pytest.raises(Exception, match="index_timestep_zero"):
        kit.run(engine, wf)


def test_comfyui_fp8_file_loads_dequantised(engine, tiny):
    """ComfyUI's fp8 files (float8 weights, a ``weight_scale`` each, ``comfy_quant`` markers) load dequantised."""
    from safetensors.torch import load_file, save_file

    folder = tiny.home / "models" / "diffusion_models"
    state = load_file(str(folder / LAYOUTS["comfyui"]))
    quant = kit.scaled_fp8(state, lambda key, value: key.endswith(".weight") and value.dim() == 2, "weight_scale",
                       marker=False, comfy_quant=True)
    path = folder / "flux2_tiny_fp8_scaled.safetensors"
    save_file(quant, str(path))
    try:
        model = kit.unwrap(kit.run(engine, kit.add_captures(loaders(path.name), m="unet"))["m"])
        ours = model.unet.state_dict()["x_embedder.weight"]
        ref = tiny.transformer.state_dict()["x_embedder.weight"]
        assert not torch.equal(ours, ref) and torch.allclose(ours, ref, atol=0.1 * float(ref.abs().max()))
    finally:
        path.unlink()


def test_tiled_decode_is_diffusers_tiling_of_the_inner_vae(engine, tiny):
    """VAEDecodeTiled on the Flux.2 VAE = AutoencoderKLFlux2's own tiled decode (64-pixel tiles = 8 of its latent
    cells, a quarter overlap) of the un-normalised, un-patchified latent."""
    from nodegraph.diffusion.flux2.vae import unpatchify

    wf = {"vae": loaders()["vae"], "pic": kit.empty_image(128, 128, 0x3080D0),
          "enc": kit.node("VAEEncode", pixels=["pic", 0], vae=["vae", 0]),
          "tiled": kit.node("VAEDecodeTiled", samples=["enc", 0], vae=["vae", 0], tile_size=64, overlap=16,
                        temporal_size=64, temporal_overlap=8)}
    cap = kit.run(engine, kit.add_captures(wf, z="enc", b="tiled"))
    vae = tiny.vae
    bn = vae.bn
    z = cap["z"]["samples"] * torch.sqrt(bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps) \
        + bn.running_mean.view(1, -1, 1, 1)
    vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = True, 64, 8, 0.25
    try:
        with torch.no_grad():
            ref = vae.decode(unpatchify(z)).sample
    finally:
        vae.use_tiling = False
    ref = (ref / 2 + 0.5).clamp(0, 1).movedim(1, -1)
    assert cap["b"].shape == ref.shape == (1, 128, 128, 3)
    assert float((cap["b"] - ref).abs().max()) < 1e-5
