"""HunyuanDiT through our nodes equals diffusers: the original/ComfyUI tensor names convert both ways; ComfyUI's
all-in-one checkpoint (DiT + BERT + mT5 with its SentencePiece model + VAE) loads with the diffusers modules'
weights; CheckpointLoaderSimple + CLIPTextEncodeHunyuanDiT + KSampler (euler/normal, cfg 5) + VAEDecode gives
HunyuanDiTPipeline's image for the same noise ≤ 1/255; ComfyUI_examples' graph validates with only its checkpoint
missing and runs on the tiny file under its name; the shipped configs have the published size (1.5B)."""

from __future__ import annotations

import json
from pathlib import Path

import family_kit as kit
import pytest
import torch
from hunyuan_dit_tiny import CHECKPOINT, DIT, build

from nodegraph.config import EngineConfig
from nodegraph.diffusion.hunyuan_dit.convert import (
    to_diffusers,
    to_original,
    transformer_config,
)
from nodegraph.diffusion.sampling import make_noise
from nodegraph.engine import Engine
from nodegraph.testing_graphs import capture_engine
from nodegraph.validation import ValidationReport

PROMPT = "a photo of the red cat on the sky"
SEED, STEPS, SIZE, CFG = 7, 3, 64, 5.0
EXAMPLE = Path(__file__).parent / "hunyuan_dit_examples" / "hunyuan_dit_1.2_example.json"
CONFIGS = Path(__file__).resolve().parents[2] / "nodegraph" / "diffusion" / "configs" / "hunyuan_dit"


tiny = kit.tiny_fixture(build, "tiny-hunyuan-dit-home")
engine = kit.engine_fixture()
_run = kit.run
_get = kit.unwrap


def graph(sampler: str = "euler", scheduler: str = "normal") -> dict:
    """CheckpointLoaderSimple + CLIPTextEncodeHunyuanDiT / CLIPTextEncode("") + KSampler + VAEDecode → "img"."""
    return {
        "ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "pos": {"class_type": "CLIPTextEncodeHunyuanDiT", "inputs": {"clip": ["ck", 1], "bert": PROMPT,
                                                                     "mt5xl": PROMPT}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ck", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ck", 0], "seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
            "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ck", 2]}},
        "img": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
    }


@pytest.mark.parametrize("style_cond", [False, True])
def test_names_convert_both_ways(style_cond):
    from diffusers import HunyuanDiT2DModel

    torch.manual_seed(0)
    model = HunyuanDiT2DModel(**dict(DIT, use_style_cond_and_image_meta_size=style_cond))
    state = model.state_dict()
    original = to_original(state)
    assert "blocks.0.attn1.Wqkv.weight" in original and "final_layer.adaLN_modulation.1.weight" in original
    assert ("style_embedder.weight" in original) is style_cond
    config = transformer_config({k: tuple(v.shape) for k, v in original.items()})
    same = [k for k in DIT if k not in ("mlp_ratio", "sample_size")]  # sample_size: not in the weights
    assert {k: config[k] for k in same} == {k: DIT[k] for k in same}
    back = to_diffusers(dict(original))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    rebuilt = HunyuanDiT2DModel.from_config(config)
    rebuilt.load_state_dict(back)  # strict: every tensor has its place
    scale, shift = state["norm_out.linear.weight"].chunk(2)  # diffusers (scale, shift), the original (shift, scale)
    assert torch.equal(original["final_layer.adaLN_modulation.1.weight"], torch.cat([shift, scale]))


def test_checkpoint_loads_the_same_weights(engine, tiny):
    cap = _run(engine, {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
                        "m": {"class_type": "Capture", "inputs": {"value": ["ck", 0]}},
                        "c": {"class_type": "Capture", "inputs": {"value": ["ck", 1]}},
                        "v": {"class_type": "Capture", "inputs": {"value": ["ck", 2]}}})
    model, clip, vae = _get(cap["m"]), _get(cap["c"]), _get(cap["v"])
    assert model.family == "hunyuan_dit" and clip.arch == "hunyuan_dit"
    # ComfyUI's HunyuanDiT (v1.2): v-prediction, scaled-linear betas 0.00085..0.018; SDXL's latent scale
    assert model.prediction_type == "v_prediction" and model.scheduler_config["beta_end"] == 0.018
    assert model.latent.scaling_factor == vae.scaling_factor == 0.13025
    pairs = ((model.unet, tiny.transformer), (clip.encoders[0], tiny.bert), (clip.encoders[1], tiny.mt5),
             (vae.vae, tiny.vae))
    for ours, ref in pairs:
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    assert clip.tokenizers[1](PROMPT).input_ids == tiny.mt5_tokenizer(PROMPT).input_ids  # the file's spiece model
    assert clip.tokenizers[0](PROMPT).input_ids == tiny.bert_tokenizer(PROMPT).input_ids


def test_graph_image_equals_hunyuan_dit_pipeline(engine, tiny):
    from nodegraph.diffusion.schedulers import build_scheduler

    image = _run(engine, graph())["img"]
    config = _get(_run(engine, {"ck": graph()["ck"], "m": {"class_type": "Capture", "inputs": {"value": ["ck", 0]}}})
                  ["m"]).scheduler_config
    scheduler = build_scheduler("euler", "normal", config, STEPS, SEED)  # the plan KSampler runs
    noise = make_noise((1, 4, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    start = scheduler.add_noise(torch.zeros_like(noise), noise, scheduler.timesteps[:1])
    with torch.no_grad():
        ref = tiny.pipeline(scheduler)(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                       guidance_scale=CFG, negative_prompt="", use_resolution_binning=False,
                                       latents=start / scheduler.init_noise_sigma, output_type="pt").images
    ref = ref.permute(0, 2, 3, 1).float()
    assert image.shape == ref.shape == (1, SIZE, SIZE, 3)
    diff = float((image - ref).abs().max())
    print(f"HunyuanDiT parity: max |ours - HunyuanDiTPipeline| = {diff:.2e} (limit {1 / 255:.2e})")
    assert diff <= 1 / 255
    assert float(image.std()) > 0.01


def test_v11_size_and_style_conditioning_equal_the_pipeline(tmp_path_factory):
    """A v1.1 DiT (image_meta_size + style inputs, betas to 0.03) equals HunyuanDiTPipeline given ComfyUI's meta
    size (768 × 768 original and target, no crop) and style 0, with ddim (euler on ComfyUI's sigmas here)."""
    from nodegraph.diffusion.schedulers import build_scheduler

    tiny = build(tmp_path_factory.mktemp("tiny-hunyuan-dit-v11"), seed=1, style_cond=True)
    cfg = EngineConfig(home=tiny.home)
    cfg.ensure_dirs()
    engine = capture_engine(cfg)
    wf = graph("ddim", "ddim_uniform")
    wf["m"] = {"class_type": "Capture", "inputs": {"value": ["ck", 0]}}
    cap = _run(engine, wf)
    image, model = cap["img"], _get(cap["m"])
    assert model.scheduler_config["beta_end"] == 0.03 and model.unet.config.use_style_cond_and_image_meta_size
    scheduler = build_scheduler("ddim", "ddim_uniform", model.scheduler_config, STEPS, SEED)
    noise = make_noise((1, 4, SIZE // 8, SIZE // 8), torch.Generator("cpu").manual_seed(SEED))
    start = scheduler.add_noise(torch.zeros_like(noise), noise, scheduler.timesteps[:1])
    with torch.no_grad():
        ref = tiny.pipeline(scheduler)(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                       guidance_scale=CFG, negative_prompt="", use_resolution_binning=False,
                                       original_size=(768, 768), target_size=(768, 768),
                                       latents=start / scheduler.init_noise_sigma, output_type="pt").images
    diff = float((image - ref.permute(0, 2, 3, 1).float()).abs().max())
    print(f"HunyuanDiT v1.1 parity: max |ours - HunyuanDiTPipeline| = {diff:.2e}")
    assert diff <= 1 / 255
    with torch.no_grad():  # the meta size matters: the pipeline's default (1024 original, 64 target) differs
        other = tiny.pipeline(scheduler)(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                                         guidance_scale=CFG, negative_prompt="", use_resolution_binning=False,
                                         latents=start / scheduler.init_noise_sigma, output_type="pt").images
    assert float((image - other.permute(0, 2, 3, 1).float()).abs().max()) > 1 / 255


def test_custom_sampling_runs_the_same_model(engine):
    """SamplerCustomAdvanced (CFGGuider, euler, BasicScheduler normal) on HunyuanDiT equals KSampler's image."""
    wf = graph("euler", "normal")
    ks = wf.pop("ks")["inputs"]
    wf.update({
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ck", 0], "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "cfg": CFG}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["ck", 0], "scheduler": "normal",
                                                              "steps": STEPS, "denoise": 1.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": ks["seed"]}},
        "ks": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["empty", 0]}},
    })
    custom = _run(engine, wf)["img"]
    plain = _run(engine, graph())["img"]
    assert float((custom - plain).abs().max()) <= 1 / 255


def test_foreign_conditioning_is_clear(tiny):
    """An SD-style CONDITIONING (no mT5 states) is refused with the node to use, not a shape error deep inside."""
    from nodegraph.diffusion.hunyuan_dit.sampling import pack

    with pytest.raises(ValueError, match="CLIPTextEncodeHunyuanDiT"):
        pack([(torch.zeros(1, 77, 32), {})], tiny.transformer.config, "positive")
    packed = pack([(torch.ones(1, 77, 32), {"conditioning_mt5xl": torch.ones(1, 256, 24)})],
                  tiny.transformer.config)
    assert packed[0][0].shape == (1, 77 + 256, 32 + 1 + 6)
    assert packed[0][0][0, 0, -6:].tolist() == [768.0, 768.0, 768.0, 768.0, 0.0, 0.0]  # ComfyUI's default meta
    from nodegraph.diffusion.hunyuan_dit.sampling import DiTAsUNet

    unet = DiTAsUNet(tiny.transformer)
    x = torch.zeros(1, 4, 8, 8)
    assert unet(x, torch.tensor(500.0), encoder_hidden_states=packed[0][0]).sample.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="ControlNet"):  # a ControlNet's residuals would be dropped: refused
        unet(x, torch.tensor(500.0), encoder_hidden_states=packed[0][0], down_block_additional_residuals=[x])


def test_missing_bert_tokenizer_is_clear(tiny, tmp_path):
    import shutil

    from nodegraph.diffusion.hunyuan_dit.checkpoint import hunyuan_dit_checkpoint

    shutil.copy(tiny.home / "models" / "checkpoints" / CHECKPOINT, tmp_path / CHECKPOINT)
    with pytest.raises(FileNotFoundError, match="tokenizer/ folder of the HunyuanDiT release"):
        hunyuan_dit_checkpoint(tmp_path / CHECKPOINT, CHECKPOINT)


def test_shipped_configs_have_the_published_size():
    """HunyuanDiT (DiT-g/2) has 1.5B parameters (the HunyuanDiT paper/model card); v1.1 adds the size/style
    embedder inputs; each config reads back from its full-size original shapes."""
    from accelerate import init_empty_weights
    from diffusers import HunyuanDiT2DModel

    for name, style in (("v1.1", True), ("v1.2", False)):
        config = json.loads((CONFIGS / f"{name}.json").read_text(encoding="utf-8"))
        with init_empty_weights():
            model = HunyuanDiT2DModel.from_config(config)
        count = sum(p.numel() for p in model.parameters())
        assert 1.45e9 < count < 1.55e9, count
        shapes = {k: tuple(v.shape) for k, v in _meta_original(model).items()}
        detected = transformer_config(shapes)
        assert detected["use_style_cond_and_image_meta_size"] is style
        for key in ("hidden_size", "num_layers", "num_attention_heads", "attention_head_dim", "text_len",
                    "text_len_t5", "cross_attention_dim", "cross_attention_dim_t5", "pooled_projection_dim"):
            assert detected[key] == config[key], key
        with init_empty_weights():
            again = HunyuanDiT2DModel.from_config(detected)
        assert sum(p.numel() for p in again.parameters()) == count


def _meta_original(model) -> dict:
    """Original names with shapes for a meta-device model (fused tensors as empty tensors of the fused shape)."""
    state = {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
    return to_original(state)


def test_example_validates_but_for_its_checkpoint(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    with pytest.raises(ValidationReport) as info:  # hunyuan_dit_1.2.safetensors is missing here
        engine.prepare(prompt)
    errors = [e for entry in info.value.node_errors.values() for e in entry["errors"]]
    assert errors and all(e["type"] == "value_not_in_list" and e["extra_info"].get("input_name") == "ckpt_name"
                          for e in errors), errors


def test_example_runs_on_the_tiny_checkpoint(tiny, tmp_path):
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=48, height=32)
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=2)
    run = Engine(EngineConfig(home=tiny.home, output_dir=tmp_path / "out"))
    run.run(run.prepare(prompt)).raise_for_status()
    (image,) = list((tmp_path / "out").rglob("*.png"))
    from PIL import Image

    with Image.open(image) as img:
        assert img.size == (48, 32)
