"""Lumina-Image 2.0 through our nodes equals diffusers: each file loads with the diffusers modules' weights (the
Gemma 2 file with its own SentencePiece model, as ComfyUI's repackaged one), and the graph UNETLoader +
CLIPLoader(lumina2, a Gemma 2 file) + CLIPTextEncodeLumina2 + ModelSamplingAuraFlow + EmptySD3LatentImage + KSampler
(euler/simple, cfg 4) + VAEDecode gives Lumina2Pipeline's image with the same noise and sigmas, ≤ 1/255. RenormCFG
follows ComfyUI's definition; ComfyUI_examples' lumina2 graph validates with only its checkpoint missing; the
shipped configs have the published sizes and are read back from full-size shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lumina_tiny import CHECKPOINT, GEMMA_FILE, L_FILES, QWEN3_FILE, VAE_FILE, TinyLumina, build, lumina2_to_comfyui

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.lumina.text import SYSTEM_PROMPTS
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT, CFG = 11, 3, 64, 6.0, 4.0
EXAMPLE = Path(__file__).parent / "lumina_examples" / "lumina2_basic_example.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLumina:
    return build(tmp_path_factory.mktemp("tiny-lumina2-home"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = L_FILES["comfyui"], cfg: float = CFG, clip: str = GEMMA_FILE) -> dict:
    """ComfyUI's Lumina 2 graph on split files (CLIPTextEncodeLumina2 for the positive), image captured as "img"."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": clip, "type": "lumina2", "device": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "pos": {"class_type": "CLIPTextEncodeLumina2", "inputs": {"system_prompt": "superior", "user_prompt": PROMPT,
                                                                  "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "aura": {"class_type": "ModelSamplingAuraFlow", "inputs": {"model": ["unet", 0], "shift": SHIFT}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["aura", 0], "seed": SEED, "steps": STEPS, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


def with_renorm(wf: dict, cfg_trunc: float, renorm_cfg: float) -> dict:
    """``wf`` with RenormCFG between ModelSamplingAuraFlow and the KSampler."""
    wf["renorm"] = {"class_type": "RenormCFG", "inputs": {"model": ["aura", 0], "cfg_trunc": cfg_trunc,
                                                          "renorm_cfg": renorm_cfg}}
    wf["ks"]["inputs"]["model"] = ["renorm", 0]
    return wf


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


@pytest.fixture(scope="module")
def image(engine) -> torch.Tensor:
    return _run(engine, graph())["img"]


@pytest.mark.parametrize("layout", sorted(L_FILES))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    wf = {"unet": graph(L_FILES[layout])["unet"], "clip": graph()["clip"],
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    cap = _run(engine, wf)
    model, clip = _get(cap["m"]), _get(cap["c"])
    assert model.family == "lumina2" and clip.arch == "lumina2"
    assert (model.flow.kind, model.flow.shift, model.flow.multiplier) == ("discrete", 6.0, 1.0)  # ComfyUI's Lumina2
    for ours, ref in ((model.unet, tiny.lumina2), (clip.encoders[0], tiny.gemma2)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        assert all(torch.equal(a[k], b[k]) for k in b)
    import sentencepiece as spm  # the file's own SentencePiece model, start token first (ComfyUI's tokenizer)

    text = SYSTEM_PROMPTS["superior"] + " <Prompt Start> " + PROMPT
    assert clip.tokenizers[0](text).input_ids == [2] + spm.SentencePieceProcessor(model_proto=tiny.spiece).encode(text)


def test_graph_image_equals_lumina2_pipeline(tiny, image):
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    sigmas = flow_sigmas("simple", STEPS, FlowSettings("discrete", SHIFT, 1.0))[:-1]
    with torch.no_grad():
        ref = tiny.lumina2_pipeline()(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                      sigmas=[float(s) for s in sigmas], guidance_scale=CFG, negative_prompt="",
                                      system_prompt=SYSTEM_PROMPTS["superior"], cfg_normalization=False,
                                      cfg_trunc_ratio=1.0, latents=noise, output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    assert image.shape == ref.shape == (1, SIZE, SIZE, 3)
    diff = float((image - ref).abs().max())
    print(f"Lumina 2 parity: max |ours - Lumina2Pipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255
    assert float(image.std()) > 0.01


def test_renorm_cfg_follows_comfyui(engine, image):
    """Above cfg_trunc only the positive counts (= cfg 1); renorm_cfg 0 leaves plain cfg; a cap of 1× the positive's
    norm changes the image."""
    positive_only = _run(engine, with_renorm(graph(), 0.0, 1.0))["img"]
    assert torch.allclose(positive_only, _run(engine, graph(cfg=1.0))["img"], atol=1e-6)
    assert torch.allclose(_run(engine, with_renorm(graph(), 100.0, 0.0))["img"], image, atol=1e-6)
    capped = _run(engine, with_renorm(graph(), 100.0, 1.0))["img"]
    assert float((capped - image).abs().max()) > 1e-3


def test_renorm_cap_is_the_positive_norm(engine):
    from nodegraph.diffusion.lumina.sampling import Lumina2Denoiser, RenormCFG

    cap = _run(engine, {k: v for k, v in with_renorm(graph(), 100.0, 0.5).items() if k not in ("ks", "dec", "img")}
               | {"m": {"class_type": "Capture", "inputs": {"value": ["renorm", 0]}},
                  "p": {"class_type": "Capture", "inputs": {"value": ["pos", 0]}},
                  "n": {"class_type": "Capture", "inputs": {"value": ["neg", 0]}}})
    model = _get(cap["m"])
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
    wf["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}}
    result, _ = run_captured(engine, wf)
    assert result.error and "Gemma-2-2B" in str(result.error) and "lumina2" in str(result.error)
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
    from accelerate import init_empty_weights
    from diffusers import Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model, Qwen3Config, Qwen3Model

    from nodegraph.diffusion.lumina.detect import detect_transformer, shipped_config
    from nodegraph.diffusion.lumina.loading import text_encoder_config, text_encoder_kind

    with init_empty_weights():
        lumina = Lumina2Transformer2DModel.from_config(shipped_config("lumina2_transformer"))
        gemma = Gemma2Model(Gemma2Config(**shipped_config("gemma2_2b")))
        qwen = Qwen3Model(Qwen3Config(**shipped_config("qwen3_4b")))
    counts = [sum(p.numel() for p in m.parameters()) for m in (lumina, gemma, qwen)]
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
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    with pytest.raises(ValidationReport) as info:  # lumina_2.safetensors (all-in-one) is missing here
        engine.prepare(prompt)
    errors = [e for entry in info.value.node_errors.values() for e in entry["errors"]]
    assert errors and all(e["type"] == "value_not_in_list" and e["extra_info"].get("input_name") == "ckpt_name"
                          for e in errors), errors


def test_checkpoint_loads_the_same_weights_and_the_example_runs(engine, tiny, tmp_path):
    """CheckpointLoaderSimple reads the all-in-one file (transformer, Gemma 2 + its SentencePiece model, ae) into the
    tiny modules' weights; ComfyUI_examples' lumina2 graph then runs on it as shipped but for size and steps."""
    cap = _run(engine, {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
                        "m": {"class_type": "Capture", "inputs": {"value": ["ck", 0]}},
                        "c": {"class_type": "Capture", "inputs": {"value": ["ck", 1]}},
                        "v": {"class_type": "Capture", "inputs": {"value": ["ck", 2]}}})
    model, clip, vae = _get(cap["m"]), _get(cap["c"]), _get(cap["v"])
    assert model.family == "lumina2" and clip.arch == "lumina2"
    for ours, ref in ((model.unet, tiny.lumina2), (clip.encoders[0], tiny.gemma2), (vae.vae, tiny.vae)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=48, height=40)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    run = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    run.run(run.prepare(prompt)).raise_for_status()
    (image,) = list((tmp_path / "out").rglob("*.png"))
    from PIL import Image

    with Image.open(image) as img:
        assert img.size == (48, 40)


def test_clip_set_last_layer_goes_deeper(engine, tiny):
    """CLIPSetLastLayer -3 encodes with the third-to-last hidden states (ComfyUI's clip_layer); -1 keeps -2."""
    wf = {"clip": graph()["clip"],
          "deep": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["clip", 0], "stop_at_clip_layer": -3}},
          "a": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["deep", 0]}},
          "b": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
          "ca": {"class_type": "Capture", "inputs": {"value": ["a", 0]}},
          "cb": {"class_type": "Capture", "inputs": {"value": ["b", 0]}}}
    cap = _run(engine, wf)
    ids = torch.tensor([tiny.gemma_tokenizer()(PROMPT).input_ids])
    with torch.no_grad():
        states = tiny.gemma2(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(cap["ca"][0][0], states[-3], atol=1e-5)
    assert torch.allclose(cap["cb"][0][0], states[-2], atol=1e-5)


def test_prompt_weights_as_comfyui(engine, tiny):
    """"a (red:1.5) cat": the pieces tokenized apart after the start token, and the weighted token's states moved
    away from an empty prompt's (start token, then padding masked out) by 1.5, as ComfyUI's token-weight encoder."""
    wf = {"clip": graph()["clip"],
          "a": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.5) cat", "clip": ["clip", 0]}},
          "ca": {"class_type": "Capture", "inputs": {"value": ["a", 0]}}}
    got = _run(engine, wf)["ca"][0][0]
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
