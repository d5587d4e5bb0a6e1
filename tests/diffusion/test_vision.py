"""Image-prompt conditioning on tiny models: CLIP vision layouts and encoding against transformers, unCLIP against
diffusers' StableUnCLIPImg2ImgPipeline, the unCLIP class labels by hand, the style adapter's tokens by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graphs import make_engine, run

from nodegraph._tiny import UNET_CONFIG, folder_metadata
from nodegraph.config import EngineConfig
from nodegraph.diffusion import unclip as unclip_mod
from nodegraph.diffusion import vision
from nodegraph.diffusion.detect import (
    METADATA_KEY,
    STORED_FILES,
    Header,
    UnknownModelError,
    detect,
)
from nodegraph.diffusion.ldm import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from nodegraph.inputs import Int, Output
from nodegraph.node import Node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "families"))
from svd_tiny import vision_to_open_clip as to_open_clip  # OpenCLIP names, written once

PIXEL = 1.0 / 255.0
VISION = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8, "projection_dim": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def _vision_model(seed: int = 5):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)).eval()


def _siglip_model(seed: int = 6, head: bool = True):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=128, intermediate_size=200, num_hidden_layers=2, num_attention_heads=2,
                             image_size=32, patch_size=8, vision_use_head=head)
    return SiglipVisionModel(cfg).eval()


def _prefixed(state: dict) -> dict:
    """ComfyUI's SigLIP file names: every tensor under vision_model. (transformers 5 keeps them flat)."""
    return {(k if k.startswith("vision_model.") else "vision_model." + k): v.contiguous() for k, v in state.items()}


class FixedImage(Node):
    """Test source: a seeded random IMAGE of a given size (not square, so crop and resize differ)."""

    INPUTS = {"width": Int(80, min=8, max=256), "height": Int(48, min=8, max=256), "seed": Int(0, min=0, max=99)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, width: int, height: int, seed: int):
        return (torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed)),)


# ---- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def home(tiny_sd, tmp_path_factory):
    """A models folder with a tiny unCLIP model (diffusers folder + LDM single file), a CLIP vision file in each
    layout and a style adapter; returns (config, parts)."""
    from diffusers import (
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor

    root = tmp_path_factory.mktemp("vision-home")
    config = EngineConfig(home=root, models_dir=root / "models")
    config.ensure_dirs()
    for sub in ("clip_vision", "style_models"):
        config.model_dir(sub).mkdir(parents=True, exist_ok=True)
    parts = dict(tiny_sd.components)
    torch.manual_seed(21)
    unet = UNet2DConditionModel(**dict(UNET_CONFIG, class_embed_type="projection",
                                       projection_class_embeddings_input_dim=2 * VISION["projection_dim"])).eval()
    with torch.no_grad():
        unet.class_embedding.linear_1.weight.mul_(4.0)  # so that the image embedding visibly steers the tiny UNet
    image_encoder = _vision_model()
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        image_encoder=image_encoder, image_normalizer=StableUnCLIPImageNormalizer(VISION["projection_dim"]),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"], unet=unet, scheduler=parts["scheduler"], vae=parts["vae"])
    folder = config.model_dir("checkpoints") / "tiny-unclip"
    pipe.save_pretrained(str(folder), safe_serialization=True)
    # the single file: LDM names (label_emb for the class embedding), OpenCLIP embedder, configs in the header
    ustate = {k.replace("class_embedding.", "add_embedding."): v for k, v in unet.state_dict().items()}
    state = unet_to_ldm(ustate, unet.config.layers_per_block)
    state.update(vae_to_ldm(parts["vae"].state_dict(), len(parts["vae"].config.block_out_channels)))
    state.update(text_encoder_to_ldm(parts["text_encoder"].state_dict()))
    vstate = image_encoder.state_dict()
    state.update(to_open_clip(vstate, "embedder.model.visual."))
    import json
    meta = json.loads(folder_metadata(folder))
    meta["files"] = {k: v for k, v in meta["files"].items() if k in STORED_FILES}
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()},
              str(config.model_dir("checkpoints") / "tiny-unclip.safetensors"),
              metadata={METADATA_KEY: json.dumps(meta)})
    save_file({k: v.contiguous() for k, v in vstate.items()}, str(config.model_dir("clip_vision") / "comfy.safetensors"))
    save_file(to_open_clip(vstate, "visual."), str(config.model_dir("clip_vision") / "open_clip.safetensors"))
    save_file({"foo.weight": torch.zeros(2)}, str(config.model_dir("clip_vision") / "junk.safetensors"))
    siglip = _siglip_model()
    save_file(_prefixed(siglip.state_dict()), str(config.model_dir("clip_vision") / "siglip.safetensors"))
    torch.manual_seed(41)
    redux = {"redux_up.weight": torch.randn(96, 128) * 0.1, "redux_up.bias": torch.randn(96) * 0.1,
             "redux_down.weight": torch.randn(32, 96) * 0.1, "redux_down.bias": torch.randn(32) * 0.1}
    save_file(redux, str(config.model_dir("style_models") / "redux.safetensors"))
    torch.manual_seed(31)
    style = _style_state(width=VISION["hidden_size"], context=32, tokens=8, layers=2)
    save_file(style, str(config.model_dir("style_models") / "style.safetensors"))
    save_file(_style_state(width=VISION["hidden_size"], context=40, tokens=8, layers=1),
              str(config.model_dir("style_models") / "style-wide.safetensors"))
    return config, {"pipe": pipe, "unet": unet, "vision": image_encoder, "style": style, "siglip": siglip,
                    "redux": redux}


@pytest.fixture(scope="module")
def engine(home):
    return make_engine(home[0], (FixedImage,))


def _style_state(width: int, context: int, tokens: int, layers: int) -> dict:
    state = {"style_embedding": torch.randn(1, tokens, width) * width ** -0.5,
             "proj": torch.randn(width, context) * width ** -0.5,
             "ln_pre.weight": 1 + 0.1 * torch.randn(width), "ln_pre.bias": 0.1 * torch.randn(width),
             "ln_post.weight": 1 + 0.1 * torch.randn(width), "ln_post.bias": 0.1 * torch.randn(width)}
    for i in range(layers):
        p = f"transformer_layes.{i}."
        shapes = {"attn.in_proj_weight": (3 * width, width), "attn.in_proj_bias": (3 * width,),
                  "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
                  "ln_1.weight": (width,), "ln_1.bias": (width,), "ln_2.weight": (width,), "ln_2.bias": (width,),
                  "mlp.c_fc.weight": (4 * width, width), "mlp.c_fc.bias": (4 * width,),
                  "mlp.c_proj.weight": (width, 4 * width), "mlp.c_proj.bias": (width,)}
        for name, shape in shapes.items():
            base = 1.0 if name.startswith("ln_") and name.endswith("weight") else 0.0
            state[p + name] = base + torch.randn(shape) * (0.1 if len(shape) == 1 else shape[-1] ** -0.5)
    return state


def _encode_graph(clip_name: str, crop: str = "center") -> dict:
    return {"img": {"class_type": "FixedImage", "inputs": {"width": 80, "height": 48, "seed": 3}},
            "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_name}},
            "enc": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["cv", 0], "image": ["img", 0],
                                                                 "crop": crop}},
            "out": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
            "pic": {"class_type": "Capture", "inputs": {"value": ["img", 0]}}}


# ---- CLIP vision ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["comfy.safetensors", "open_clip.safetensors"])
def test_clip_vision_layouts_load_the_transformers_weights(home, name):
    config, parts = home
    loaded = vision.load_clip_vision(config.model_dir("clip_vision") / name)
    theirs = parts["vision"].state_dict()
    ours = loaded.model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert loaded.image_size == 32 and loaded.kind == "custom"


@pytest.mark.parametrize("crop", ["center", "none"])
def test_clip_vision_encode_equals_transformers(engine, home, crop):
    result, cap = run(engine, _encode_graph("open_clip.safetensors", crop))
    result.raise_for_status()
    out, image = cap["out"], cap["pic"]
    # ComfyUI's clip_preprocess written out for this 48×80 image: short side to 32 (32×53) then the middle 32
    # columns, or the whole image squeezed to 32×32; 8-bit rounding; CLIP's mean/std
    size = (32, 53) if crop == "center" else (32, 32)
    x = F.interpolate(image.movedim(-1, 1), size=size, mode="bicubic", antialias=True)
    x = x[:, :, :, 10:42] if crop == "center" else x
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = home[1]["vision"](pixel_values=x, output_hidden_states=True)
    assert torch.allclose(out.image_embeds, ref.image_embeds, atol=1e-5)
    assert torch.allclose(out.last_hidden_state, ref.last_hidden_state, atol=1e-5)
    assert torch.allclose(out["penultimate_hidden_states"], ref.hidden_states[-2], atol=1e-5)
    assert out.last_hidden_state.shape == (1, 17, VISION["hidden_size"])


def test_siglip_loads_and_encodes_as_comfyui(engine, home):
    """A SigLIP tower in ComfyUI's names (head left out): transformers' weights; mean/std 0.5; image_embeds are the
    post-normalised hidden states."""
    theirs = {k: v for k, v in home[1]["siglip"].state_dict().items() if "head" not in k}
    loaded = vision.load_clip_vision(home[0].model_dir("clip_vision") / "siglip.safetensors")
    ours = loaded.model.state_dict()
    assert loaded.family == "siglip" and set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    result, cap = run(engine, _encode_graph("siglip.safetensors", "none"))
    result.raise_for_status()
    x = F.interpolate(cap["pic"].movedim(-1, 1), size=(32, 32), mode="bicubic", antialias=True)
    x = (torch.clip(255.0 * x, 0, 255).round() / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        ref = home[1]["siglip"](pixel_values=x, output_hidden_states=True)
    out = cap["out"]
    assert torch.allclose(out.last_hidden_state, ref.last_hidden_state, atol=1e-5)
    assert torch.equal(out.image_embeds, out.last_hidden_state)
    assert torch.allclose(out.penultimate_hidden_states, ref.hidden_states[-2], atol=1e-5)


def test_clip_vision_loader_refuses_other_files(engine):
    result, _ = run(engine, _encode_graph("junk.safetensors"))
    assert result.status == "error"
    assert "not a CLIP vision model" in str(result.error) and "models/clip_vision" in str(result.error)


@pytest.mark.parametrize("kind,width,depth,proj", [("vit-l-14", 1024, 24, 768), ("vit-h-14", 1280, 32, 1024),
                                                   ("vit-bigg-14", 1664, 48, 1280)])
@pytest.mark.parametrize("layout", ["comfy", "open_clip", "unclip"])
def test_full_size_vision_models_use_the_shipped_configs(kind, width, depth, proj, layout):
    """Shapes only (meta tensors): ComfyUI's clip_vision files and OpenCLIP towers pick the right config."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = dict(VISION, hidden_size=width, num_hidden_layers=depth, intermediate_size=width * 4, projection_dim=proj,
               num_attention_heads=16, patch_size=14, image_size=224)
    with init_empty_weights():
        state = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).state_dict()
    if layout != "comfy":
        state = to_open_clip(state, "visual." if layout == "open_clip" else "embedder.model.visual.")
    config, found = vision.config_for(vision.vision_state(state), "meta")
    assert found == kind
    assert (config["hidden_size"], config["num_hidden_layers"], config["projection_dim"]) == (width, depth, proj)
    assert config["hidden_act"] == ("quick_gelu" if kind == "vit-l-14" else "gelu")


def test_full_size_siglip_and_vit_l_336_use_the_shipped_configs():
    from accelerate import init_empty_weights
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    with init_empty_weights():
        sig = SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                   num_attention_heads=16, image_size=384, patch_size=14))
        vit = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                             num_hidden_layers=24, num_attention_heads=16,
                                                             image_size=336, patch_size=14, projection_dim=768))
    config, kind = vision.config_for(vision.vision_state(_prefixed(sig.state_dict())), "meta")
    assert kind == "siglip-so400m-14-384" and config["image_size"] == 384
    assert config["hidden_act"] == "gelu_pytorch_tanh"
    config, kind = vision.config_for(vision.vision_state(vit.state_dict()), "meta")
    assert kind == "vit-l-14" and config["image_size"] == 336 and config["hidden_act"] == "quick_gelu"


# ---- unCLIP --------------------------------------------------------------------------------------------------------

def _unclip_graph(ckpt: str, strength: float = 1.0, augmentation: float = 0.2) -> dict:
    return {
        "ckpt": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "img": {"class_type": "FixedImage", "inputs": {"width": 64, "height": 64, "seed": 5}},
        "enc": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["ckpt", 3], "image": ["img", 0],
                                                             "crop": "center"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blue", "clip": ["ckpt", 1]}},
        "un": {"class_type": "unCLIPConditioning", "inputs": {"conditioning": ["pos", 0], "clip_vision_output":
                                                              ["enc", 0], "strength": strength,
                                                              "noise_augmentation": augmentation}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 7, "steps": 4, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["un", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "out": {"class_type": "Capture", "inputs": {"value": ["dec", 0]}},
        "cvo": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
    }


def test_unclip_matches_stable_unclip_pipeline(engine, home):
    from diffusers import EulerDiscreteScheduler

    result, cap = run(engine, _unclip_graph("tiny-unclip", augmentation=0.2))
    result.raise_for_status()
    ours = cap["out"].numpy()
    pipe = home[1]["pipe"]
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    original = type(pipe).noise_image_embeddings

    def same_noise(self, image_embeds, noise_level, noise=None, generator=None):  # ours: a fixed-seed CPU draw
        noise = torch.randn(image_embeds.shape, generator=torch.Generator().manual_seed(unclip_mod.NOISE_SEED))
        return original(self, image_embeds, noise_level, noise=noise, generator=None)

    pipe.noise_image_embeddings = same_noise.__get__(pipe)
    ref = pipe(prompt="a red circle", negative_prompt="blue", image_embeds=cap["cvo"].image_embeds,
               noise_level=unclip_mod.noise_level(0.2), height=48, width=64, num_inference_steps=4,
               guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    plain, cap2 = run(engine, _unclip_graph("tiny-unclip", strength=0.0))
    plain.raise_for_status()
    assert ours.shape == ref.shape == (1, 48, 64, 3)
    assert np.abs(ours - cap2["out"].numpy()).max() > 0.02  # the image embedding changes the image …
    print(f"unCLIP vs StableUnCLIPImg2ImgPipeline: max |diff| {np.abs(ours - ref).max() * 255:.4f}/255")
    assert np.abs(ours - ref).max() <= PIXEL  # … as diffusers' pipeline does


def test_unclip_single_file_loads_the_same_weights(home):
    config, parts = home
    ckpt = unclip_mod.load_unclip_checkpoint(config.model_dir("checkpoints") / "tiny-unclip.safetensors", config)
    for ours, theirs in ((ckpt.model.unet, parts["unet"]), (ckpt.clip_vision.model, parts["vision"])):
        a, b = ours.state_dict(), theirs.state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    assert unclip_mod.is_unclip(ckpt.model)


def test_unclip_single_file_samples_as_the_folder(engine):
    """ComfyUI's graph on the single file (LDM names, OpenCLIP embedder) gives the folder's image."""
    images = []
    for ckpt in ("tiny-unclip", "tiny-unclip.safetensors"):
        result, cap = run(engine, _unclip_graph(ckpt, augmentation=0.5))
        result.raise_for_status()
        images.append(cap["out"])
    assert torch.equal(images[0], images[1])


def test_unclip_class_labels_by_hand():
    """One image: cat(√ᾱ·e + √(1−ᾱ)·n, [cos, sin](level·f)) · strength; two: their sum re-noised at level 50."""
    from types import SimpleNamespace

    e = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    out = SimpleNamespace(image_embeds=e)
    t = np.arange(1001) / 1000
    abar = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.minimum(1 - abar[1:] / abar[:-1], 0.999)
    ac = np.cumprod(1 - betas)
    noise = torch.randn(1, 16, generator=torch.Generator().manual_seed(unclip_mod.NOISE_SEED))

    def hand(x, level):
        freqs = torch.exp(-math.log(10000) * torch.arange(8, dtype=torch.float64) / 8)
        emb = torch.cat([torch.cos(level * freqs), torch.sin(level * freqs)]).float()[None]
        return torch.cat([math.sqrt(ac[level]) * x + math.sqrt(1 - ac[level]) * noise, emb], dim=1)

    one = unclip_mod.image_vector([{"clip_vision_output": SimpleNamespace(image_embeds=e[:1]), "strength": 0.7,
                                    "noise_augmentation": 0.3}])
    assert unclip_mod.noise_level(0.3) == 300
    assert torch.allclose(one, hand(e[:1], 300) * 0.7, atol=1e-5)
    two = unclip_mod.image_vector([{"clip_vision_output": out, "strength": 1.0, "noise_augmentation": 0.0}])
    summed = hand(e[:1], 0) + hand(e[1:], 0)
    assert torch.allclose(two, hand(summed[:, :16], 50), atol=1e-5)
    model = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(class_embed_type="projection",
                                                                        projection_class_embeddings_input_dim=32)))
    assert torch.equal(unclip_mod.class_labels(model, {}, 3, "cpu", torch.float32), torch.zeros(3, 32))
    with pytest.raises(ValueError, match="same checkpoint"):
        unclip_mod.class_labels(model, {"unclip_conditioning": [{"clip_vision_output": SimpleNamespace(
            image_embeds=torch.zeros(1, 8))}]}, 1, "cpu", torch.float32, "positive")


def test_full_size_unclip_file_is_detected_on_shapes(tmp_path):
    """An SD2.1-unCLIP-H header (shapes only): projection class embedding of 2048, v-prediction."""
    import json

    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from nodegraph.diffusion.detect import CONFIGS_DIR

    cfg = json.loads((CONFIGS_DIR / "sd2" / "unet" / "config.json").read_text())
    cfg.update(class_embed_type="projection", projection_class_embeddings_input_dim=2048)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(cfg)
    state = {k.replace("class_embedding.", "add_embedding."): v for k, v in unet.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in unet_to_ldm(state, 2).items()}
    shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] = (3072, 1024)
    found = detect(tmp_path / "sd21-unclip-h.safetensors", Header(tmp_path / "sd21-unclip-h.safetensors", shapes, {}))
    unet_cfg = found.config("unet/config.json")
    assert found.arch == "sd2" and found.prediction_type == "v_prediction"
    assert unet_cfg["class_embed_type"] == "projection" and unet_cfg["projection_class_embeddings_input_dim"] == 2048


def test_unclip_loader_refuses_a_plain_checkpoint(home, tiny_sd):
    with pytest.raises(UnknownModelError, match="not an unCLIP checkpoint"):
        unclip_mod.load_unclip_checkpoint(tiny_sd.folder, tiny_sd.config)


# ---- style model ---------------------------------------------------------------------------------------------------

def _hand_style(state: dict, hidden: torch.Tensor) -> torch.Tensor:
    """The T2I style adapter written out: 16-head pre-norm attention blocks with QuickGELU MLPs."""
    def ln(x, p):
        return F.layer_norm(x, x.shape[-1:], state[p + ".weight"], state[p + ".bias"])

    tokens = state["style_embedding"].shape[1]
    x = ln(torch.cat([hidden, state["style_embedding"].expand(hidden.shape[0], -1, -1)], 1), "ln_pre")
    layers = sorted({int(k.split(".")[1]) for k in state if k.startswith("transformer_layes.")})
    for i in layers:
        p = f"transformer_layes.{i}."
        h = ln(x, p + "ln_1")
        q, k, v = (h @ state[p + "attn.in_proj_weight"].t() + state[p + "attn.in_proj_bias"]).chunk(3, -1)
        b, n, w = q.shape
        q, k, v = (t.reshape(b, n, 16, w // 16).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // 16), -1) @ v
        x = x + att.transpose(1, 2).reshape(b, n, w) @ state[p + "attn.out_proj.weight"].t() + \
            state[p + "attn.out_proj.bias"]
        m = ln(x, p + "ln_2") @ state[p + "mlp.c_fc.weight"].t() + state[p + "mlp.c_fc.bias"]
        x = x + (m * torch.sigmoid(1.702 * m)) @ state[p + "mlp.c_proj.weight"].t() + state[p + "mlp.c_proj.bias"]
    return ln(x[:, -tokens:], "ln_post") @ state["proj"]


def _style_graph(model: str, strength: float, strength_type: str, batch: int = 1,
                 clip_name: str = "comfy.safetensors") -> dict:
    wf = {
        "ckpt": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": "tiny-unclip"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "img": {"class_type": "FixedImage", "inputs": {"width": 64, "height": 64, "seed": 9}},
        "img2": {"class_type": "FixedImage", "inputs": {"width": 64, "height": 64, "seed": 10}},
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": ["img", 0], "image2": ["img2", 0]}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_name}},
        "enc": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["cv", 0],
                                                             "image": ["img" if batch == 1 else "batch", 0],
                                                             "crop": "center"}},
        "sm": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": model}},
        "apply": {"class_type": "StyleModelApply", "inputs": {
            "conditioning": ["pos", 0], "style_model": ["sm", 0], "clip_vision_output": ["enc", 0],
            "strength": strength, "strength_type": strength_type}},
        "c": {"class_type": "Capture", "inputs": {"value": ["apply", 0]}},
        "t": {"class_type": "Capture", "inputs": {"value": ["pos", 0]}},
        "o": {"class_type": "Capture", "inputs": {"value": ["enc", 0]}},
    }
    return wf


def test_style_model_apply_appends_the_adapter_tokens(engine, home):
    result, cap = run(engine, _style_graph("style.safetensors", 0.5, "multiply"))
    result.raise_for_status()
    (emb, extras), = cap["c"]
    text = cap["t"][0][0]
    expected = _hand_style(home[1]["style"], cap["o"].last_hidden_state) * 0.5
    assert emb.shape == (1, text.shape[1] + 8, 32)
    assert torch.equal(emb[:, :text.shape[1]], text)
    assert torch.allclose(emb[:, text.shape[1]:], expected, atol=1e-4)
    assert "attention_mask" not in extras


def test_style_model_attn_bias_records_comfyui_mask(engine):
    result, cap = run(engine, _style_graph("style.safetensors", 0.5, "attn_bias", batch=2))
    result.raise_for_status()
    (emb, extras), = cap["c"]
    n_txt = cap["t"][0][0].shape[1]
    assert emb.shape[1] == n_txt + 16  # two images' tokens in one row, unscaled
    mask = extras["attention_mask"]
    assert mask.shape == (1, n_txt + 16 + 1, n_txt + 16 + 1)
    assert torch.allclose(mask[:, :n_txt, n_txt:n_txt + 16].float(), torch.tensor(math.log(0.5)), atol=1e-3)
    assert float(mask[:, :n_txt, :n_txt].abs().max()) == 0.0 and extras["attention_mask_img_shape"] == (1, 1)


def test_style_model_of_another_width_fails_clearly(engine):
    result, _ = run(engine, _style_graph("style-wide.safetensors", 1.0, "multiply"))
    assert result.status == "error" and "40-wide tokens" in str(result.error)


def test_redux_appends_one_token_per_siglip_patch(engine, home):
    """Flux Redux's tokens by hand: redux_down(silu(redux_up(SigLIP last hidden state))) × strength, 16 patches."""
    result, cap = run(engine, _style_graph("redux.safetensors", 0.8, "multiply", clip_name="siglip.safetensors"))
    result.raise_for_status()
    (emb, _), = cap["c"]
    text, r = cap["t"][0][0], home[1]["redux"]
    h = cap["o"].last_hidden_state
    up = h @ r["redux_up.weight"].t() + r["redux_up.bias"]
    expected = (up * torch.sigmoid(up)) @ r["redux_down.weight"].t() + r["redux_down.bias"]
    assert emb.shape == (1, text.shape[1] + 16, 32)
    assert torch.allclose(emb[:, text.shape[1]:], expected * 0.8, atol=1e-5)


def test_vision_models_are_held_by_the_model_manager(engine):
    """CLIP vision, style and unCLIP models live in the engine's ModelManager; an evicted one reloads from its
    cached handle."""
    from nodegraph.models import model_manager

    result, _ = run(engine, _style_graph("style.safetensors", 1.0, "multiply"))
    result.raise_for_status()
    manager = model_manager(engine.services, engine.config)
    held = {(kind, name) for kind, name, _ in manager.loaded()}
    assert {("clip_vision", "comfy.safetensors"), ("style_models", "style.safetensors"),
            ("checkpoints", "tiny-unclip")} <= held
    key = next(k for k in manager._entries if k[0] == "clip_vision" and "comfy.safetensors" in str(k))
    reloads = manager.stats.reloads
    assert manager.evict(key)
    wf = _style_graph("style.safetensors", 1.0, "multiply")
    wf["img"]["inputs"]["seed"] = 11  # a new image: the encode runs again on the cached CLIP_VISION handle
    result, _ = run(engine, wf)
    result.raise_for_status()
    assert manager.stats.reloads == reloads + 1
