"""Lumina-Image 2.0 through our nodes equals diffusers: each file loads with the diffusers modules' weights (the
Gemma 2 file with its own SentencePiece model, as ComfyUI's repackaged one), and the graph UNETLoader +
CLIPLoader(lumina2, a Gemma 2 file) + CLIPTextEncodeLumina2 + ModelSamplingAuraFlow + EmptySD3LatentImage + KSampler
(euler/simple, cfg 4) + VAEDecode gives Lumina2Pipeline's image with the same noise and sigmas, ≤ 1/255. RenormCFG
follows ComfyUI's definition; ComfyUI_examples' lumina2 graph validates with only its checkpoint missing; the
shipped configs have the published sizes and are read back from full-size shapes."""

from __future__ import annotations

from pathlib import Path

import family_kit as kit
import pytest
import torch
from lumina_tiny import (
    CHECKPOINT,
    GEMMA_FILE,
    L_FILES,
    QWEN3_FILE,
    VAE_FILE,
    build,
    lumina2_to_comfyui,
)

from nodegraph.diffusion.lumina.text import SYSTEM_PROMPTS

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT, CFG = 11, 3, 64, 6.0, 4.0
EXAMPLE = Path(__file__).parent / "lumina_examples" / "lumina2_basic_example.json"

tiny = kit.tiny_fixture(build, "tiny-lumina2-home")
engine = kit.engine_fixture("tiny")


def graph(unet: str = L_FILES["comfyui"], cfg: float = CFG, clip: str = GEMMA_FILE) -> dict:
    """ComfyUI's Lumina 2 graph on split files (CLIPTextEncodeLumina2 for the positive), image captured as "img"."""
    return {
        "unet": kit.unet_loader(unet),
        "clip": kit.node("CLIPLoader", clip_name=clip, type="lumina2", device="default"),
        "vae": kit.node("VAELoader", vae_name=VAE_FILE),
        "pos": kit.node("CLIPTextEncodeLumina2", system_prompt="superior", user_prompt=PROMPT, clip=["clip", 0]),
        "neg": kit.encode(""),
        "aura": kit.node("ModelSamplingAuraFlow", model=["unet", 0], shift=SHIFT),
        "empty": kit.empty_latent("EmptySD3LatentImage", SIZE),
        "ks": kit.ksampler("aura", SEED, STEPS, cfg),
        "dec": kit.decode(),
        "img": kit.capture("dec"),
    }


def with_renorm(wf: dict, cfg_trunc: float, renorm_cfg: float) -> dict:
    """``wf`` with RenormCFG between ModelSamplingAuraFlow and the KSampler."""
    wf["renorm"] = kit.node("RenormCFG", model=["aura", 0], cfg_trunc=cfg_trunc, renorm_cfg=renorm_cfg)
    wf["ks"]["inputs"]["model"] = ["renorm", 0]
    return wf


@pytest.fixture(scope="module")
def image(engine) -> torch.Tensor:
    return kit.run(engine, graph())["img"]


@pytest.mark.parametrize("layout", sorted(L_FILES))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    cap = kit.run(engine, kit.add_captures({"unet": graph(L_FILES[layout])["unet"], "clip": graph()["clip"]},
                                   m="unet", c="clip"))
    model, clip = kit.unwrap(cap["m"]), kit.unwrap(cap["c"])
    assert model.family == "lumina2" and clip.arch == "lumina2"
    assert (model.flow.kind, model.flow.shift, model.flow.multiplier) == ("discrete", 6.0, 1.0)  # ComfyUI's Lumina2
    for ours, ref in ((model.unet, tiny.lumina2), (clip.encoders[0], tiny.gemma2)):
        kit.assert_same_weights(ours, ref)
    import sentencepiece as spm  # the file's own SentencePiece model, start token first (ComfyUI's tokenizer)

    text = SYSTEM_PROMPTS["superior"] + " <Prompt Start> " + PROMPT
    assert clip.tokenizers[0](text).input_ids == [2] + spm.SentencePieceProcessor(model_proto=tiny.spiece).encode(text)


def test_graph_image_equals_lumina2_pipeline(tiny, image):
    noise = kit.seeded_noise((1, 16, SIZE // 8, SIZE // 8), SEED)
    with torch.no_grad():
        ref = tiny.lumina2_pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                      sigmas=kit.simple_sigmas(STEPS, SHIFT), guidance_scale=CFG, negative_prompt="",
                                      system_prompt=SYSTEM_PROMPTS["superior"], cfg_normalization=False,
                                      cfg_trunc_ratio=1.0, latents=noise, output_type="pt").images
    assert image.shape == (1, SIZE, SIZE, 3)
    kit.assert_parity(image, kit.channels_last(ref), "Lumina 2 parity vs Lumina2Pipeline")
    assert float(image.std()) > 0.01


def test_renorm_cfg_follows_comfyui(engine, image):
    """Above cfg_trunc only the positive counts (= cfg 1); renorm_cfg 0 leaves plain cfg; a cap of 1× the positive's
    norm changes the image."""
    positive_only = kit.run(engine, with_renorm(graph(), 0.0, 1.0))["img"]
    assert torch.allclose(positive_only, kit.run(engine, graph(cfg=1.0))["img"], atol=1e-6)
    assert torch.allclose(kit.run(engine, with_renorm(graph(), 100.0, 0.0))["img"], image, atol=1e-6)
    capped = kit.run(engine, with_renorm(graph(), 100.0, 1.0))["img"]
    assert kit.max_diff(capped, image) > 1e-3


def test_renorm_cap_is_the_positive_norm(engine):
    from nodegraph.diffusion.lumina.sampling import Lumina2Denoiser, RenormCFG

    wf = {k: v for k, v in with_renorm(graph(), 100.0, 0.5).items() if k not in ("ks", "dec", "img")}
    cap = kit.run(engine, kit.add_captures(wf, m="renorm", p="pos", n="neg"))
    model = kit.unwrap(cap["m"])
    assert RenormCFG(100.0, 0.5) in model.patches
    den = Lumina2Denoiser(model, cap["p"], cap["n"], CFG, torch.float32, "cpu")
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond, uncond = den.split(x, 0.5)
        out = den(x, 0.5)
    guided = uncond + CFG * (cond - uncond)
    limit = 0.5 * float(cond.norm())
    assert float(guided.norm()) > limit and abs(float(out.norm()) - limit) < 1e-4 * limit
    assert torch.allclose(out / out.norm(), guided / guided.norm(), atol=1e-6)


def test_foreign_conditioning_and_missing_tokenizer_are_clear(engine, tiny, tmp_path):
    wf = graph(clip=QWEN3_FILE)  # Z-Image's Qwen3 states on the Lumina 2 transformer
    wf["pos"] = kit.encode(PROMPT)
    error = kit.run_error(engine, wf)
    assert "Gemma-2-2B" in error and "lumina2" in error
    from safetensors.torch import load_file, save_file

    from nodegraph.diffusion.lumina.loading import load_lumina_clip

    state = load_file(str(tiny.home / "models" / "text_encoders" / GEMMA_FILE))
    del state["spiece_model"]
    save_file(state, str(tmp_path / "gemma_bare.safetensors"))
    with pytest.raises(FileNotFoundError, match="gemma_tokenizer/"):
        load_lumina_clip(tmp_path / "gemma_bare.safetensors", "gemma_bare.safetensors")


def test_shipped_configs_have_the_published_sizes_and_are_detected():
    """Lumina-Image 2.0: 2,609,769,152 parameters ("2.6B"); Gemma-2-2B: 2,614,341,888 ("2.6B"); Qwen3-4B (the text
    model, embedding tied): 4,022,468,096 ("4.0B"). Detection reads the configs back from full-size shapes."""
    from diffusers import Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model, Qwen3Config, Qwen3Model

    from nodegraph.diffusion.lumina.detect import detect_transformer, shipped_config
    from nodegraph.diffusion.lumina.loading import (
        text_encoder_config,
        text_encoder_kind,
    )

    lumina = kit.on_meta(lambda: Lumina2Transformer2DModel.from_config(shipped_config("lumina2_transformer")))
    gemma = kit.on_meta(lambda: Gemma2Model(Gemma2Config(**shipped_config("gemma2_2b"))))
    qwen = kit.on_meta(lambda: Qwen3Model(Qwen3Config(**shipped_config("qwen3_4b"))))
    counts = [kit.parameter_count(m) for m in (lumina, gemma, qwen)]
    assert counts == [2_609_769_152, 2_614_341_888, 4_022_468_096]
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in lumina2_to_comfyui(lumina.state_dict()).items()}
    found = detect_transformer(shapes)
    assert found is not None and (found.family, found.layout) == ("lumina2", "comfyui")
    assert found.config == shipped_config("lumina2_transformer")
    for model, kind, name in ((gemma, "gemma2", "gemma2_2b"), (qwen, "qwen3", "qwen3_4b")):
        te = {"model." + k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert text_encoder_kind(te) == (kind, "model.")
        assert text_encoder_config(te, kind, "model.") == shipped_config(name)


def test_example_validates_but_for_its_checkpoint(tmp_path):
    """lumina_2.safetensors (all-in-one) is missing here: the only error."""
    _, _, names = kit.validate_examples([EXAMPLE], {"ckpt_name"}, tmp_path)
    assert names == {"ckpt_name"}


def test_checkpoint_loads_the_same_weights_and_the_example_runs(engine, tiny, tmp_path):
    """CheckpointLoaderSimple reads the all-in-one file (transformer, Gemma 2 + its SentencePiece model, ae) into the
    tiny modules' weights; ComfyUI_examples' lumina2 graph then runs on it as shipped but for size and steps."""
    cap = kit.run(engine, kit.add_captures({"ck": kit.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)},
                                   m=["ck", 0], c=["ck", 1], v=["ck", 2]))
    model, clip, vae = kit.unwrap(cap["m"]), kit.unwrap(cap["c"]), kit.unwrap(cap["v"])
    assert model.family == "lumina2" and clip.arch == "lumina2"
    for ours, ref in ((model.unet, tiny.lumina2), (clip.encoders[0], tiny.gemma2), (vae.vae, tiny.vae)):
        kit.assert_same_weights(ours, ref)
    prompt = kit.shrink(kit.load_example(EXAMPLE), {"EmptySD3LatentImage": {"width": 48, "height": 40},
                                            "KSampler": {"steps": 2}})
    kit.run_example(tiny.home, tmp_path / "out", prompt)
    kit.assert_one_image(tmp_path / "out", (48, 40))


def test_clip_set_last_layer_goes_deeper(engine, tiny):
    """CLIPSetLastLayer -3 encodes with the third-to-last hidden states (ComfyUI's clip_layer); -1 keeps -2."""
    wf = {"clip": graph()["clip"], "deep": kit.node("CLIPSetLastLayer", clip=["clip", 0], stop_at_clip_layer=-3),
          "a": kit.encode(PROMPT, "deep"), "b": kit.encode(PROMPT)}
    cap = kit.run(engine, kit.add_captures(wf, ca="a", cb="b"))
    ids = torch.tensor([tiny.gemma_tokenizer()(PROMPT).input_ids])
    with torch.no_grad():
        states = tiny.gemma2(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(cap["ca"][0][0], states[-3], atol=1e-5)
    assert torch.allclose(cap["cb"][0][0], states[-2], atol=1e-5)


def test_prompt_weights_as_comfyui(engine, tiny):
    """"a (red:1.5) cat": the pieces tokenized apart after the start token, and the weighted token's states moved
    away from an empty prompt's (start token, then padding masked out) by 1.5, as ComfyUI's token-weight encoder."""
    wf = {"clip": graph()["clip"], "a": kit.encode("a (red:1.5) cat"), "ca": kit.capture("a")}
    got = kit.run(engine, wf)["ca"][0][0]
    tok = tiny.gemma_tokenizer()
    pieces = [tok(p, add_special_tokens=False).input_ids for p in ("a ", "red", " cat")]
    ids = torch.tensor([[2] + pieces[0] + pieces[1] + pieces[2]])
    empty, mask = torch.zeros_like(ids), torch.zeros_like(ids)
    empty[0, 0], mask[0, 0] = 2, 1
    with torch.no_grad():
        z = tiny.gemma2(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        z0 = tiny.gemma2(input_ids=empty, attention_mask=mask, output_hidden_states=True).hidden_states[-2]
    weights = torch.tensor([1.0] * (1 + len(pieces[0])) + [1.5] * len(pieces[1]) + [1.0] * len(pieces[2]))
    assert torch.allclose(got, (z - z0) * weights[None, :, None] + z0, atol=1e-5)
