"""HiDream-I1 through our nodes equals diffusers: each file loads with the diffusers/transformers modules' weights,
and the graph UNETLoader + QuadrupleCLIPLoader + VAELoader + CLIPTextEncode + ModelSamplingSD3 +
EmptySD3LatentImage + KSampler (euler/simple, cfg) + VAEDecode gives HiDreamImagePipeline's image with the same noise
and sigmas, ≤ 1/255. CLIPTextEncodeHiDream's four prompts equal the pipeline's prompt..prompt_4. ComfyUI_examples'
hidream graphs validate with only the model files missing, and the I1 ones run on the tiny model saved under their
file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hidream_tiny import ENCODERS, LAYOUTS, TinyHiDream, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.flow.schedule import FlowSettings, flow_sigmas
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, SHIFT, CFG = 7, 3, 64, 3.0, 2.0
EXAMPLES = sorted((Path(__file__).parent / "hidream_examples").glob("*.json"))
FILE_INPUTS = {"unet_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4", "vae_name", "image"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyHiDream:
    return build(tmp_path_factory.mktemp("tiny-hidream-home"))


@pytest.fixture(scope="module")
def engine(tiny):
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    return capture_engine(cfg)


def graph(unet: str = LAYOUTS["comfyui"], cfg: float = CFG, shift: float = SHIFT) -> dict:
    """ComfyUI_examples' HiDream graph (QuadrupleCLIPLoader, ModelSamplingSD3), image captured as "img"."""
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "clip": {"class_type": "QuadrupleCLIPLoader", "inputs": {f"clip_name{i + 1}": n
                                                                 for i, n in enumerate(ENCODERS)}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["clip", 0]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["clip", 0]}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": shift}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["shift", 0], "seed": SEED, "steps": STEPS, "cfg": cfg, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


def _run(engine, wf: dict) -> dict:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap


def _get(value):
    return value.get() if hasattr(value, "get") else value


@pytest.fixture(scope="module")
def reference(tiny):
    """HiDreamImagePipeline's image [1, H, W, 3] with our KSampler's noise for SEED and our shifted sigmas."""
    noise = make_noise((1, 16, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    sigmas = flow_sigmas("simple", STEPS, FlowSettings("discrete", SHIFT, 1000.0))[:-1]
    with torch.no_grad():
        out = tiny.pipeline(SIZE)(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                  sigmas=[float(s) for s in sigmas], guidance_scale=CFG, latents=noise,
                                  output_type="pt").images
    return out.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_files_load_the_diffusers_weights(engine, tiny, layout):
    wf = {"unet": graph(LAYOUTS[layout])["unet"], "clip": graph()["clip"],
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}},
          "c": {"class_type": "Capture", "inputs": {"value": ["clip", 0]}}}
    cap = _run(engine, wf)
    model, clip = _get(cap["m"]), _get(cap["c"])
    assert model.family == "hidream" and model.flow.kind == "discrete" and model.flow.shift == 1.0
    assert model.flow.multiplier == 1000.0 and clip.arch == "hidream"
    pairs = zip((model.unet, *clip.encoders), (tiny.transformer, tiny.clip_l, tiny.clip_g, tiny.t5, tiny.llama.model))
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b), type(ref).__name__
        assert all(torch.equal(a[k], b[k]) for k in b), type(ref).__name__


def test_graph_image_equals_hidream_pipeline(engine, reference):
    image = _run(engine, graph())["img"]
    assert image.shape == reference.shape
    diff = float((image - reference).abs().max())
    print(f"HiDream parity: max |ours - HiDreamImagePipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255


def test_four_prompts_equal_the_pipeline_encoding(engine, tiny):
    """CLIPTextEncodeHiDream feeds each encoder its own prompt, as the pipeline's prompt, prompt_2, _3, _4."""
    texts = {"clip_l": "a red cat", "clip_g": "the blue sky", "t5xxl": "a green tree", "llama": "photo of a dog"}
    wf = {"clip": graph()["clip"],
          "enc": {"class_type": "CLIPTextEncodeHiDream", "inputs": dict(texts, clip=["clip", 0])},
          "cond": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}}}
    ((t5, extras),) = _run(engine, wf)["cond"]
    with torch.no_grad():
        ref = tiny.pipeline(SIZE).encode_prompt(texts["clip_l"], texts["clip_g"], texts["t5xxl"], texts["llama"],
                                                device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(t5, ref[0], atol=1e-6)
    assert torch.allclose(extras["conditioning_llama3"], ref[2].movedim(0, 1), atol=1e-6)
    assert torch.allclose(extras["pooled_output"], ref[4], atol=1e-6)
    assert tuple(extras["conditioning_llama3"].shape) == (1, 4, 128, 32)  # every layer's states, 128 tokens


def test_custom_sampling_equals_ksampler(engine):
    """BasicScheduler + CFGGuider + euler through flow.custom (HiDreamDenoiser) equals KSampler on the same noise."""
    from nodegraph.diffusion.devices import DeviceManager
    from nodegraph.diffusion.flow import custom
    from nodegraph.diffusion.flow.sampling import euler
    from nodegraph.diffusion.guiders import CFGGuider, RandomNoise

    wf = graph()
    for name, node in (("lat", "ks"), ("cond", "pos"), ("uncond", "neg"), ("shifted", "shift"),
                       ("empty_lat", "empty")):
        wf[name] = {"class_type": "Capture", "inputs": {"value": [node, 0]}}
    cap = _run(engine, wf)
    model = _get(cap["shifted"])
    sigmas = custom.model_schedule(model, "simple", STEPS, 1.0)
    out, _ = custom.sample_custom(CFGGuider(model, cap["cond"], cap["uncond"], CFG), euler, sigmas,
                                  RandomNoise(SEED), cap["empty_lat"], DeviceManager(), model=model)
    assert torch.allclose(out["samples"], cap["lat"]["samples"], atol=1e-5)


def test_shift_and_cfg_change_the_image(engine, reference):
    for wf in (graph(shift=1.0), graph(cfg=1.0)):
        assert float((_run(engine, wf)["img"] - reference).abs().max()) > 1 / 255


def test_subsets_load_and_foreign_conditioning_is_refused(engine, tiny):
    """CLIPLoader/DualCLIPLoader type hidream load a subset (ComfyUI's zeros for the rest); the tiny transformer
    then refuses the full-size zeros, and a Flux-style conditioning, naming the loaders to use."""
    from nodegraph.diffusion.hidream.sampling import HiDreamDenoiser

    wf = {"dual": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": ENCODERS[3], "clip_name2": ENCODERS[0],
                                                              "type": "hidream"}},
          "one": {"class_type": "CLIPLoader", "inputs": {"clip_name": ENCODERS[2], "type": "hidream"}},
          "d": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["dual", 0]}},
          "o": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["one", 0]}},
          "dc": {"class_type": "Capture", "inputs": {"value": ["d", 0]}},
          "oc": {"class_type": "Capture", "inputs": {"value": ["o", 0]}},
          "unet": graph()["unet"], "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}}
    cap = _run(engine, wf)
    (t5, extras), = cap["dc"]
    assert tuple(t5.shape) == (1, 128, 4096) and not t5.any()  # no T5: zeros
    assert tuple(extras["pooled_output"].shape) == (1, 32 + 1280) and not extras["pooled_output"][:, 32:].any()
    assert tuple(extras["conditioning_llama3"].shape) == (1, 4, 128, 32)
    (t5, extras), = cap["oc"]
    assert tuple(t5.shape) == (1, 128, 40) and tuple(extras["conditioning_llama3"].shape) == (1, 32, 1, 4096)
    model = _get(cap["m"])
    for cond in (cap["dc"], cap["oc"], [(torch.zeros(1, 128, 40), {"pooled_output": torch.zeros(1, 80)})]):
        with pytest.raises(ValueError, match="QuadrupleCLIPLoader"):
            HiDreamDenoiser(model, cond, [], 1.0, torch.float32, "cpu")


def test_missing_llama_tokenizer_says_where_to_put_it(tiny, tmp_path):
    from nodegraph.diffusion.hidream.loading import llama_tokenizer

    with pytest.raises(FileNotFoundError, match="Meta's licence.*tokenizer/"):
        llama_tokenizer(tmp_path / ENCODERS[3])
    assert llama_tokenizer(tiny.home / "models" / "text_encoders" / ENCODERS[3]).pad_token == "<|eot_id|>"


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["prompt"]


def test_examples_validate_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    checked = []
    for path in EXAMPLES:
        prompt = _prompt(path)
        assert all(engine.registry.get(n["class_type"]) is not None for n in prompt.values()), path.name
        checked.append(path.stem)
        with pytest.raises(ValidationReport) as info:  # the model files are missing here
            engine.prepare(prompt)
        for node_id, entry in info.value.node_errors.items():
            for error in entry["errors"]:
                name = error["extra_info"].get("input_name")
                if (path.stem, name, error["type"]) == ("hidream_e1_example", "style", "required_input_missing"):
                    continue  # saved before DualCFGGuider had "style", which ComfyUI v0.8.0 requires as well
                assert error["type"] == "value_not_in_list" and name in FILE_INPUTS, (path.name, node_id, error)
    assert {"hidream_dev_example", "hidream_full_example", "hidream_e1_example", "hidream_e1.1_example"} == \
        set(checked)


@pytest.mark.parametrize("example", ["hidream_dev_example", "hidream_full_example", "hidream_e1.1_example"])
def test_examples_run_on_the_tiny_model(tiny, tmp_path, example):
    """I1 dev/full (KSampler) and E1.1 (InstructPixToPix + DualCFGGuider nested + CFGNorm on a flow model)."""
    from PIL import Image

    prompt = _prompt(Path(__file__).parent / "hidream_examples" / f"{example}.json")
    for node in prompt.values():
        if node["class_type"] == "EmptySD3LatentImage":
            node["inputs"].update(width=SIZE, height=SIZE)
        if node["class_type"] in ("KSampler", "BasicScheduler"):
            node["inputs"].update(steps=2)
        if node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"].update(megapixels=0.01)  # the minimum: 96×96 from the 64×64 input
        if node["class_type"] == "UNETLoader":  # E1.1: the same architecture under the example's file name
            folder = tiny.home / "models" / "diffusion_models"
            target = folder / node["inputs"]["unet_name"]
            if not target.exists():
                target.write_bytes((folder / "hidream_i1_dev_bf16.safetensors").read_bytes())
        if node["class_type"] == "LoadImage":
            (tiny.home / "input").mkdir(exist_ok=True)
            Image.new("RGB", (SIZE, SIZE), (200, 40, 40)).save(tiny.home / "input" / node["inputs"]["image"])
    engine = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    try:
        prepared = engine.prepare(prompt)
    except ValidationReport as exc:
        raise AssertionError(exc.node_errors) from None
    result = engine.run(prepared)
    result.raise_for_status()
    images = list((tmp_path / "out").rglob("*.png"))
    assert len(images) == 1
    with Image.open(images[0]) as img:
        assert img.size == ((96, 96) if example == "hidream_e1.1_example" else (SIZE, SIZE))
        assert float(np.asarray(img, dtype=np.float32).std()) > 0


def test_token_input_equals_the_latent_input(engine, tiny):
    """The unpadded patch-token path (large non-square latents, HiDream-E1's edit input) equals the pipeline's
    latent input on a square latent, where neither pads: same patch order, positions and output layout."""
    from nodegraph.diffusion.hidream.sampling import HiDreamDenoiser

    cap = _run(engine, {"unet": graph()["unet"], "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}})
    model = _get(cap["m"])
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
    assert tuple(_run(engine, wide)["img"].shape) == (1, SIZE // 2, SIZE, 3)
    images = []
    for color in (0x3080D0, 0xD08030):
        wf = graph()
        wf["pic"] = {"class_type": "EmptyImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1,
                                                             "color": color}}
        wf["ip2p"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0], "pixels": ["pic", 0]}}
        wf["ks"]["inputs"].update(positive=["ip2p", 0], negative=["ip2p", 1], latent_image=["ip2p", 2])
        images.append(_run(engine, wf)["img"])
    assert images[0].shape == (1, SIZE, SIZE, 3) and bool(torch.isfinite(images[0]).all())
    assert float((images[0] - images[1]).abs().max()) > 1e-4  # the source image steers the result


def test_scaled_fp8_llama_loads_unscaled_and_comfy_quant_is_refused(tiny):
    """A ComfyUI "fp8_scaled" Llama (float8 weights + scale_weight) loads as weights × scale; a per-layer quantised
    (comfy_quant) file is refused naming the files that load."""
    from safetensors.torch import load_file, save_file

    from nodegraph.diffusion.detect import UnknownModelError
    from nodegraph.diffusion.hidream.loading import load_hidream_clips

    folder = tiny.home / "models" / "text_encoders"
    state = load_file(str(folder / ENCODERS[3]))
    scaled = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if key.endswith("proj.weight"):
            scale = value.abs().max() / 448.0
            scaled[key] = (value / scale).to(torch.float8_e4m3fn)
            scaled[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            scaled[key] = value
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
