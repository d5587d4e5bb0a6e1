"""UNETLoader on Stable Diffusion UNets saved alone (LDM and diffusers names), as ComfyUI users keep them in
models/unet or models/diffusion_models: the split files give exactly the image of the full checkpoint."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nodegraph.api import Link, Node, Output
from nodegraph.config import EngineConfig
from nodegraph.diffusion.detect import METADATA_KEY, UnknownModelError, read_header
from nodegraph.diffusion.ldm import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from nodegraph.diffusion.split_unet import detect_unet, ldm_names
from nodegraph.testing_graphs import capture_engine, run_captured, txt2img_graph

UNET, VAE, TE = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."


def _save(state: dict, path, metadata: dict | None = None) -> None:
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(path), metadata=metadata)


def _part(state: dict, prefix: str, new: str = "") -> dict:
    return {new + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_sd, tiny_sdxl):
    """A models folder with full checkpoints and the same models split into UNet / CLIP / VAE files.

    SD1: the tiny UNet and VAE with a CLIP text encoder over CLIP's real 49,408-token vocabulary (CLIPLoader uses
    the shipped vocabulary), saved without header configs, so the full checkpoint's configs are derived from the
    shapes like the UNet file's. SDXL: the tiny SDXL checkpoint, whose sizes only its header configs describe; the
    UNet files carry that header as a nodegraph export does.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("split-unet-home")
    config = EngineConfig(home=root, models_dir=root / "models")
    config.ensure_dirs()
    models = config.models_dir
    for folder in ("checkpoints", "unet", "diffusion_models", "text_encoders", "vae"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    parts = tiny_sd.components
    torch.manual_seed(5)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu"))
    full = {**unet_to_ldm(parts["unet"].state_dict(), parts["unet"].config.layers_per_block),
            **vae_to_ldm(parts["vae"].state_dict(), len(parts["vae"].config.block_out_channels)),
            **text_encoder_to_ldm(te.state_dict())}
    _save(full, models / "checkpoints" / "sd1-full.safetensors")
    _save(_part(full, UNET, UNET), models / "diffusion_models" / "sd1-unet-ldm.safetensors")
    _save(parts["unet"].state_dict(), models / "diffusion_models" / "sd1-unet-diffusers.safetensors")
    _save(_part(full, VAE), models / "vae" / "sd1-vae.safetensors")
    _save(_part(full, TE), models / "text_encoders" / "sd1-clip.safetensors")  # text_model.* (ComfyUI's clip_l)

    shutil.copy(tiny_sdxl.single_file, models / "checkpoints" / "sdxl-full.safetensors")
    with safe_open(str(tiny_sdxl.single_file), framework="pt") as f:
        xl = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        meta = {METADATA_KEY: f.metadata()[METADATA_KEY]}
    _save(_part(xl, UNET), models / "diffusion_models" / "sdxl-unet-ldm.safetensors", meta)  # root-level LDM names
    _save(tiny_sdxl.components["unet"].state_dict(), models / "diffusion_models" / "sdxl-unet-diffusers.safetensors", meta)
    _save(_part(xl, VAE), models / "vae" / "sdxl-vae.safetensors")  # "xl" in the name: SDXL's scaling
    _save({"foo.weight": torch.zeros(2, 2), "bar.bias": torch.zeros(2)}, models / "diffusion_models" / "junk.safetensors")
    _save({UNET + "input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, models / "diffusion_models" / "broken.safetensors")
    return config


@pytest.fixture(scope="module")
def engine(home):
    return capture_engine(home, (PlainLatent,))


class PlainLatent(Node):
    """Test node: the latent's samples alone (as a latent file holds them), without its VAE's pixel scale."""

    INPUTS = {"samples": Link("LATENT")}  # noqa: RUF012 - as every node declares it
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, samples: dict):
        return ({"samples": samples["samples"]},)


def _base(ckpt: str, steps: int, seed: int) -> dict:
    """txt2img from a plain 16×16 latent: an empty one would be re-created at the model's own latent scale (8 pixels
    per cell for a UNet file alone, 2 for the tiny checkpoint's VAE)."""
    wf = txt2img_graph(ckpt, steps=steps, seed=seed, width=128, height=128)
    wf["plain"] = {"class_type": "PlainLatent", "inputs": {"samples": ["empty", 0]}}
    wf["ks"]["inputs"]["latent_image"] = ["plain", 0]
    return wf


def _split(wf: dict, unet: str, clip: dict | None, vae: str, weight_dtype: str = "default") -> dict:
    wf = dict(wf)
    wf["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": weight_dtype}}
    wf["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae}}
    clip_link = ["ckpt", 1]
    if clip is not None:
        wf["clip"] = clip
        clip_link = ["clip", 0]
        del wf["ckpt"]
    for node in ("pos", "neg"):
        wf[node] = {**wf[node], "inputs": {**wf[node]["inputs"], "clip": clip_link}}
    wf["ks"] = {**wf["ks"], "inputs": {**wf["ks"]["inputs"], "model": ["unet", 0]}}
    wf["dec"] = {**wf["dec"], "inputs": {**wf["dec"]["inputs"], "vae": ["vae", 0]}}
    return wf


def _image(engine, wf: dict) -> torch.Tensor:
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    return cap["img"]


SD1_CLIP = {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd1-clip.safetensors", "type": "stable_diffusion"}}


@pytest.mark.parametrize("unet", ["sd1-unet-ldm.safetensors", "sd1-unet-diffusers.safetensors"])
def test_sd1_split_files_give_the_checkpoint_image(engine, unet):
    base = _base("sd1-full.safetensors", 3, 7)
    full = _image(engine, base)
    split = _image(engine, _split(base, unet, SD1_CLIP, "sd1-vae.safetensors"))
    assert full.shape == (1, 32, 32, 3) and float(full.std()) > 0
    assert torch.equal(full, split)


@pytest.mark.parametrize("unet", ["sdxl-unet-ldm.safetensors", "sdxl-unet-diffusers.safetensors"])
def test_sdxl_split_unet_gives_the_checkpoint_image(engine, unet):
    """SDXL's CLIP comes from the checkpoint: DualCLIPLoader has no sdxl type yet."""
    base = _base("sdxl-full.safetensors", 3, 3)
    full = _image(engine, base)
    split = _image(engine, _split(base, unet, None, "sdxl-vae.safetensors"))
    assert torch.equal(full, split)


@pytest.mark.parametrize("unet", ["sdxl-unet-ldm.safetensors", "sdxl-unet-diffusers.safetensors"])
def test_split_unet_model_is_the_arch_with_its_latent_format(engine, tiny_sdxl, unet):
    wf = {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}}
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    model = cap["m"].get() if hasattr(cap["m"], "get") else cap["m"]
    assert (model.family, model.arch, model.latent.scaling_factor, model.latent.rgb) == \
        ("unet", "sdxl", 0.13025, None)
    ours, ref = model.unet.state_dict(), tiny_sdxl.components["unet"].state_dict()
    assert set(ours) == set(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_fp8_storage_runs_close_to_full_precision(engine):
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    base = _base("sd1-full.safetensors", 2, 7)
    full = _image(engine, _split(base, "sd1-unet-ldm.safetensors", SD1_CLIP, "sd1-vae.safetensors"))
    fp8 = _image(engine, _split(base, "sd1-unet-ldm.safetensors", SD1_CLIP, "sd1-vae.safetensors", "fp8_e4m3fn"))
    assert not torch.equal(full, fp8)
    assert float((full - fp8).abs().mean()) < 0.1


UNKNOWN = {"junk.safetensors": r"no diffusion transformer this engine knows \(2 tensors, e.g. bar.bias, foo.weight\)"
                                 ".*SD1/SD2/SDXL UNets",
           "broken.safetensors": "looks like a Stable Diffusion UNet .* lacks out.2.weight"}


@pytest.mark.parametrize(("name", "words"), sorted(UNKNOWN.items()))
def test_unknown_files_name_what_was_found(engine, name, words):
    wf = {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}}
    result, _ = run_captured(engine, wf)
    with pytest.raises(Exception, match=words):
        result.raise_for_status()


def _real_shapes(arch: str) -> tuple[dict, int]:
    """The tensor shapes of a real-size UNet of ``arch`` (built on the meta device: no memory)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from nodegraph.diffusion.detect import CONFIGS_DIR

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(CONFIGS_DIR / arch / "unet")))
    return {k: v for k, v in unet.state_dict().items()}, unet.config.layers_per_block


@pytest.mark.parametrize("arch", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
@pytest.mark.parametrize("layout", ["ldm", "diffusers"])
def test_real_sizes_are_detected_with_the_shipped_configs(tmp_path, arch, layout):
    """Full-size UNets (headers only matter: tensors are 1-element stand-ins with the real names)."""
    from diffusers import UNet2DConditionModel

    from nodegraph.diffusion.detect import CONFIGS_DIR, Header

    shapes, layers = _real_shapes(arch)
    names = unet_to_ldm(shapes, layers) if layout == "ldm" else shapes
    name = "sd2-768-v.safetensors" if arch == "sd2" else f"{arch}.safetensors"  # SD2: v-prediction by name
    header = Header(tmp_path / name, {k: tuple(v.shape) for k, v in names.items()}, {})
    found = detect_unet(header, ldm_names(header))
    assert found.arch == arch, found.reasons
    shipped = UNet2DConditionModel.load_config(str(CONFIGS_DIR / arch / "unet"))
    assert found.config("unet/config.json")["block_out_channels"] == list(shipped["block_out_channels"])
    assert found.prediction_type == ("v_prediction" if arch == "sd2" else "epsilon")


def test_detection_refuses_a_non_unet(tmp_path):
    path = tmp_path / "x.safetensors"
    _save({"blocks.0.weight": torch.zeros(1)}, path)
    with pytest.raises(UnknownModelError, match="no Stable Diffusion UNet"):
        ldm_names(read_header(path))


def test_a_unet_in_the_older_unet_folder_loads(engine, home):
    shutil.copy(home.models_dir / "diffusion_models" / "sd1-unet-ldm.safetensors",
                home.models_dir / "unet" / "only-in-unet.safetensors")
    wf = {"unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "only-in-unet.safetensors",
                                                          "weight_dtype": "default"}},
          "m": {"class_type": "Capture", "inputs": {"value": ["unet", 0]}}}
    result, _ = run_captured(engine, wf)
    result.raise_for_status()


def test_sdxl_clip_from_two_files_is_the_checkpoints_pair(tmp_path):
    """clip_l + clip_g files (ComfyUI's names, any order) load as the encoders that were saved: same hidden states
    and pooled projection (heads are width/64, as real CLIP-L/bigG have; the shipped CLIP-G config is SDXL's
    text_encoder_2 config); tokenizers pad as SDXL's (``<|endoftext|>``, then ``!``)."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from nodegraph.diffusion.detect import CONFIGS_DIR
    from nodegraph.diffusion.sdxl_clip import load_sdxl_clip

    def config(hidden: int, act: str) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                              num_attention_heads=1, max_position_embeddings=77, projection_dim=hidden,
                              hidden_act=act, bos_token_id=0, eos_token_id=2, pad_token_id=1)

    torch.manual_seed(21)
    te, te2 = CLIPTextModel(config(32, "quick_gelu")).eval(), CLIPTextModelWithProjection(config(48, "gelu")).eval()
    clip_l, clip_g = tmp_path / "clip_l.safetensors", tmp_path / "clip_g.safetensors"
    _save({("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in te.state_dict().items()}, clip_l)
    _save(te2.state_dict(), clip_g)  # text_model.* + text_projection.weight
    clip = load_sdxl_clip([clip_g, clip_l], ["clip_g.safetensors", "clip_l.safetensors"])
    assert clip.arch == "sdxl" and [t.pad_token for t in clip.tokenizers] == ["<|endoftext|>", "!"]
    sdxl_g = json.loads((CONFIGS_DIR / "sdxl" / "text_encoder_2" / "config.json").read_text())
    assert clip.encoders[1].config.hidden_act == sdxl_g["hidden_act"]
    ids = clip.tokenizers[1]("a red cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        for ours, theirs in zip(clip.encoders, (te, te2)):
            a, b = ours(ids, output_hidden_states=True), theirs(ids, output_hidden_states=True)
            assert torch.equal(a.hidden_states[-2], b.hidden_states[-2])
        assert torch.equal(clip.encoders[1](ids).text_embeds, te2(ids).text_embeds)
    with pytest.raises(ValueError, match="takes a CLIP-L and a CLIP-G file"):
        load_sdxl_clip([clip_l, clip_l], ["clip_l.safetensors", "clip_l.safetensors"])
