"""LoRA: kohya/LDM/PEFT key formats, strength, exact restoration of the base weights, and the LoraLoader node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodegraph.config import EngineConfig
from nodegraph.diffusion import lora
from nodegraph.diffusion.ldm import unet_module_names
from nodegraph.diffusion.loading import load_checkpoint
from nodegraph.diffusion.types import LoraPatch
from nodegraph.engine import Engine
from nodegraph.executor import cache_keys
from nodegraph.registry import Registry

RANK = 4


def _unet_layers(unet) -> list[str]:
    """Attention projections of every transformer block plus one resnet convolution (LoCon)."""
    names = [n for n, m in unet.named_modules()
             if n.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "attn1.to_out.0"))]
    return names + ["down_blocks.0.resnets.0.conv1"]


def _pair(module: torch.nn.Module, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    w = module.weight
    if w.ndim == 4:  # conv: down [r, in, k, k], up [out, r, 1, 1]
        return (torch.randn(RANK, w.shape[1], *w.shape[2:], generator=gen) * 0.1,
                torch.randn(w.shape[0], RANK, 1, 1, generator=gen) * 0.1)
    return torch.randn(RANK, w.shape[1], generator=gen) * 0.1, torch.randn(w.shape[0], RANK, generator=gen) * 0.1


def build_lora(unet, text_encoder, style: str) -> dict[str, torch.Tensor]:
    """A rank-4 LoRA for the tiny model; the same numbers whatever ``style`` spells the keys."""
    gen = torch.Generator().manual_seed(7)
    modules = dict(unet.named_modules())
    to_ldm = {v: k for k, v in unet_module_names(unet).items()}
    out: dict[str, torch.Tensor] = {}
    for name in _unet_layers(unet):
        down, up = _pair(modules[name], gen)
        if style == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
        elif style == "kohya_ldm":
            key = "lora_unet_" + to_ldm[name].replace(".", "_")
        else:
            key = "unet." + name
        if style == "peft":
            out[key + ".lora_A.weight"], out[key + ".lora_B.weight"] = down, up
        else:
            out[key + ".lora_down.weight"], out[key + ".lora_up.weight"] = down, up
            out[key + ".alpha"] = torch.tensor(float(RANK))  # alpha = rank: scale 1, as PEFT's default
    te_modules = dict(text_encoder.named_modules())
    for name in ("encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1"):
        down, up = _pair(te_modules[name], gen)
        if style == "peft":
            out[f"text_encoder.text_model.{name}.lora_A.weight"] = down
            out[f"text_encoder.text_model.{name}.lora_B.weight"] = up
        else:
            key = "lora_te_text_model_" + name.replace(".", "_")
            out[key + ".lora_down.weight"], out[key + ".lora_up.weight"] = down, up
            out[key + ".alpha"] = torch.tensor(float(RANK))
    return out


@pytest.fixture(scope="module")
def ckpt(tiny_sd):
    return load_checkpoint(tiny_sd.single_file, tiny_sd.config)


@pytest.fixture(scope="module")
def lora_files(ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    paths = {}
    for style in ("kohya", "kohya_ldm", "peft"):
        paths[style] = folder / f"{style}.safetensors"
        save_file(build_lora(ckpt.model.unet, ckpt.clip.encoders[0], style), str(paths[style]))
    return paths


def _unet_out(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    ctx = torch.randn(1, 5, 32, generator=gen)
    with torch.no_grad():
        return model.unet(x, torch.tensor([500]), encoder_hidden_states=ctx).sample


def _text_out(clip) -> torch.Tensor:
    ids = clip.tokenizers[0]("a red circle", return_tensors="pt").input_ids
    with torch.no_grad():
        return clip.encoders[0](ids).last_hidden_state


def test_lora_changes_output_and_restores_weights_exactly(ckpt, lora_files):
    model = ckpt.model
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    base = _unet_out(model)
    patched = model.with_lora(LoraPatch("kohya", str(lora_files["kohya"]), 1.0))
    with lora.applied(patched) as changed:
        out = _unet_out(patched)
    assert changed == len(_unet_layers(model.unet))
    assert not torch.allclose(out, base, atol=1e-4)
    after = model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(_unet_out(model), base)
    assert patched.unet is model.unet and model.loras == ()


def test_strength_zero_is_identity_and_strength_scales(ckpt, lora_files):
    model = ckpt.model
    base = _unet_out(model)
    with lora.applied(model.with_lora(LoraPatch("k", str(lora_files["kohya"]), 0.0))) as changed:
        assert changed == 0 and torch.equal(_unet_out(model), base)
    # The delta is linear in strength at the weight level: check one layer exactly.
    layer = dict(model.unet.named_modules())["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
    w0 = layer.weight.detach().clone()
    deltas = []
    for strength in (0.5, 1.0):
        with lora.applied(model.with_lora(LoraPatch("k", str(lora_files["kohya"]), strength))):
            deltas.append(layer.weight.detach() - w0)
    assert torch.allclose(deltas[1], 2 * deltas[0], atol=1e-6)


def test_key_formats_agree(ckpt, lora_files):
    outs = []
    for style in ("kohya", "kohya_ldm", "peft"):
        with lora.applied(ckpt.model.with_lora(LoraPatch(style, str(lora_files[style]), 0.7))):
            outs.append(_unet_out(ckpt.model))
    assert torch.allclose(outs[0], outs[1], atol=1e-6) and torch.allclose(outs[0], outs[2], atol=1e-6)


def test_lora_on_text_encoder(ckpt, lora_files):
    from dataclasses import replace

    clip = ckpt.clip
    base = _text_out(clip)
    texts = []
    for style in ("kohya", "peft"):
        patched = replace(clip, loras=(LoraPatch(style, str(lora_files[style]), 1.0),))
        with lora.applied(patched, library=lora.LoraLibrary()) as changed:
            assert changed == 2
            texts.append(_text_out(patched))
    assert not torch.allclose(texts[0], base, atol=1e-4)
    assert torch.allclose(texts[0], texts[1], atol=1e-6)
    assert torch.equal(_text_out(clip), base)


def test_weights_restored_when_the_block_raises(ckpt, lora_files):
    before = _unet_out(ckpt.model)
    with pytest.raises(RuntimeError, match="boom"):
        with lora.applied(ckpt.model.with_lora(LoraPatch("k", str(lora_files["kohya"]), 1.0))):
            raise RuntimeError("boom")
    assert torch.equal(_unet_out(ckpt.model), before)


def test_library_caches_and_rereads_changed_files(lora_files, tmp_path):
    path = tmp_path / "x.safetensors"
    shutil.copy(lora_files["kohya"], path)
    library = lora.LoraLibrary()
    first = library.get(path)
    assert library.get(path) is first
    save_file({"lora_unet_a.lora_down.weight": torch.zeros(1, 2), "lora_unet_a.lora_up.weight": torch.zeros(2, 1)},
              str(path))
    assert library.get(path) is not first and list(library.get(path).pairs) == ["lora_unet_a"]


# ---- the LoraLoader node in an engine ---------------------------------------------------------------------------

@pytest.fixture
def engine_home(tiny_sd, lora_files, tmp_path) -> EngineConfig:
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    shutil.copy(tiny_sd.single_file, config.model_dir("checkpoints") / "tiny.safetensors")
    shutil.copy(lora_files["kohya_ldm"], config.model_dir("loras") / "style.safetensors")
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(1, 2),
               "lora_unet_nowhere.lora_up.weight": torch.zeros(2, 1)},
              str(config.model_dir("loras") / "other.safetensors"))
    return config


def _engine(config: EngineConfig) -> Engine:
    registry = Registry.load(builtins=("nodes.utils", "nodes.loaders"), entry_points=False, source_plugins=False)
    assert not registry.errors
    return Engine(config, registry=registry)


def _graph(lora_name: str, strength_model: float, strength_clip: float) -> dict:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
            "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora_name,
                                                         "strength_model": strength_model,
                                                         "strength_clip": strength_clip}},
            "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}},
            "4": {"class_type": "ShowValue", "inputs": {"value": ["2", 1]}}}


def test_lora_loader_node(engine_home):
    engine = _engine(engine_home)
    prompt = engine.prepare(_graph("style.safetensors", 0.8, 0.0))
    result = engine.run(prompt)
    assert result.status == "success", result.error
    keys, _ = cache_keys(prompt, engine_home)
    base_model, base_clip, _ = engine.cache.get(keys["1"]).outputs
    model, clip = engine.cache.get(keys["2"]).outputs
    assert model.loras == (LoraPatch("style.safetensors", str(Path(engine_home.model_dir("loras"), "style.safetensors")
                                                              .resolve()), 0.8),)
    assert clip is base_clip and model.unet is base_model.unet and base_model.loras == ()
    bad = engine.run(engine.prepare(_graph("other.safetensors", 1.0, 1.0)))
    assert bad.status == "error" and "matches no layer" in bad.error.exception_message


def test_sdxl_lora_names_reach_both_text_encoders(tiny_sdxl, tmp_path):
    ckpt = load_checkpoint(tiny_sdxl.single_file, tiny_sdxl.config)
    gen = torch.Generator().manual_seed(3)
    state = {}
    for key, module in (("lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                         dict(ckpt.clip.encoders[0].named_modules())["encoder.layers.0.self_attn.q_proj"]),
                        ("lora_te2_text_model_encoder_layers_1_mlp_fc2",
                         dict(ckpt.clip.encoders[1].named_modules())["text_model.encoder.layers.1.mlp.fc2"]),
                        ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k",
                         dict(ckpt.model.unet.named_modules())["down_blocks.1.attentions.0.transformer_blocks.1"
                                                               ".attn2.to_k"])):
        state[key + ".lora_down.weight"], state[key + ".lora_up.weight"] = _pair(module, gen)
    path = tmp_path / "xl.safetensors"
    save_file(state, str(path))
    from dataclasses import replace

    patch = LoraPatch("xl", str(path), 1.0)
    before = [e.state_dict() for e in ckpt.clip.encoders]
    before = [{k: v.clone() for k, v in sd.items()} for sd in before]
    with lora.applied(replace(ckpt.clip, loras=(patch,))) as changed_clip:
        assert changed_clip == 2
    with lora.applied(ckpt.model.with_lora(patch)) as changed_unet:
        assert changed_unet == 1
    for b, e in zip(before, ckpt.clip.encoders):
        assert all(torch.equal(b[k], v) for k, v in e.state_dict().items())
