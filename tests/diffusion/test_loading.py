"""Checkpoint and VAE loading: folder vs single file, offline configs, refusals, and the loader nodes in an engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from nodegraph._tiny import make_components, to_ldm_state_dict

from nodegraph.config import EngineConfig, UnsafePathError
from nodegraph.diffusion import derive
from nodegraph.diffusion.detect import Header, UnknownModelError, detect, read_header
from nodegraph.diffusion.ldm import vae_to_ldm
from nodegraph.diffusion.loading import (
    EMBEDDED_NAME,
    UnsafeModelError,
    checkpoint_names,
    clip_tokenizer,
    load_checkpoint,
    load_vae,
    lora_names,
    resolve_model,
    vae_names,
)
from nodegraph.validation import ValidationReport


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _public(cfg) -> dict:
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def clip_vocab_model(tmp_path_factory: pytest.TempPathFactory):
    """A tiny model whose text encoder uses CLIP's real 49,408-token vocabulary, saved without nodegraph metadata."""
    home = tmp_path_factory.mktemp("clipvocab-home")
    config = EngineConfig(home=home, models_dir=home / "models")
    config.ensure_dirs()
    parts = make_components(clip_tokenizer(), text_heads=1)
    path = config.model_dir("checkpoints") / "tiny-clipvocab.safetensors"
    state = to_ldm_state_dict(parts)
    save_file(state, str(path))
    return config, path, parts, state


def test_single_file_loads_identical_to_folder(tiny_sd):
    folder = load_checkpoint(tiny_sd.folder, tiny_sd.config)
    single = load_checkpoint(tiny_sd.single_file, tiny_sd.config)
    _same_weights(folder.model.unet, single.model.unet)
    _same_weights(folder.vae.vae, single.vae.vae)
    _same_weights(folder.clip.encoders[0], single.clip.encoders[0])
    _same_weights(tiny_sd.components["unet"], single.model.unet)
    assert _public(folder.model.unet.config) == _public(single.model.unet.config)
    assert folder.model.scheduler_config == single.model.scheduler_config
    assert folder.vae.scaling_factor == single.vae.scaling_factor == 0.18215
    ids = single.clip.tokenizers[0]("a photo of a cat").input_ids
    assert ids == folder.clip.tokenizers[0]("a photo of a cat").input_ids
    assert single.extras["format"] == "single_file" and folder.extras["format"] == "diffusers"
    assert single.model.latent.channels == 4 and single.model.latent.downscale == 2


def test_shipped_clip_vocabulary_gives_clip_ids():
    assert clip_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = clip_tokenizer("!")("a cat", padding="max_length", max_length=6).input_ids
    assert padded == [49406, 320, 2368, 49407, 0, 0]


def test_derived_configs_match_the_true_ones(tiny_sd):
    header = read_header(tiny_sd.single_file)
    bare = Header(header.path, header.shapes, {})
    unet, vae, text = derive.unet_config(bare), derive.vae_config(bare), derive.text_encoder_config(bare)
    truth = tiny_sd.components
    for key in ("in_channels", "out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                "use_linear_projection", "mid_block_type"):
        assert unet[key] == truth["unet"].config[key], key
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        assert list(unet[key]) == list(truth["unet"].config[key]), key
    for key in ("block_out_channels", "layers_per_block", "latent_channels"):
        assert vae[key] == (list(truth["vae"].config[key]) if key == "block_out_channels"
                            else truth["vae"].config[key]), key
    te = truth["text_encoder"].config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings"):
        assert text[key] == getattr(te, key), key
    # Without its header, the tiny model's own 576-token vocabulary cannot be recovered: a clear refusal.
    with pytest.raises(UnknownModelError, match="576-token vocabulary"):
        detect(tiny_sd.single_file, bare)


def test_derived_single_file_loads_with_same_weights(clip_vocab_model):
    config, path, parts, _ = clip_vocab_model
    found = detect(path)
    assert found.arch == "custom" and "derived" in " ".join(found.reasons)
    ckpt = load_checkpoint(path, config)
    _same_weights(parts["unet"], ckpt.model.unet)
    _same_weights(parts["vae"], ckpt.vae.vae)
    _same_weights(parts["text_encoder"], ckpt.clip.encoders[0])
    ids = ckpt.clip.tokenizers[0]("a photo of a cat", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(ckpt.clip.encoders[0](ids).last_hidden_state,
                              parts["text_encoder"](ids).last_hidden_state, atol=1e-6)


def test_pickle_refused_unless_allowed(clip_vocab_model, tmp_path):
    _, _, parts, state = clip_vocab_model
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    path = config.model_dir("checkpoints") / "old.ckpt"
    torch.save({"state_dict": state}, str(path))
    assert "old.ckpt" not in checkpoint_names(config)  # lists show only what the loaders read
    with pytest.raises(UnsafeModelError, match="arbitrary code.*--allow-unsafe-pickle"):
        load_checkpoint(resolve_model(config, "checkpoints", "old.ckpt"), config)
    config.allow_unsafe_pickle = True
    assert "old.ckpt" in checkpoint_names(config)
    _same_weights(parts["unet"], load_checkpoint(path, config).model.unet)


def test_names_and_paths(tiny_sd):
    names = checkpoint_names(tiny_sd.config)
    assert names[0] == EMBEDDED_NAME
    assert {"tiny-sd", "tiny-sd.safetensors"} <= set(names)
    assert resolve_model(tiny_sd.config, "checkpoints", "tiny-sd") == tiny_sd.folder.resolve()
    for bad in ("../tiny-sd.safetensors", "/etc/passwd", "sub/../../x.safetensors"):
        with pytest.raises(UnsafePathError):
            resolve_model(tiny_sd.config, "checkpoints", bad)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        resolve_model(tiny_sd.config, "checkpoints", "nope.safetensors")


def test_unknown_files_are_named(tmp_path):
    odd = tmp_path / "mystery.safetensors"
    save_file({"foo.bar": torch.zeros(2), "baz": torch.zeros(1)}, str(odd))
    with pytest.raises(UnknownModelError, match=r"mystery\.safetensors.*foo"):
        load_checkpoint(odd)
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 2), "lora_unet_x.lora_up.weight": torch.zeros(2, 1)},
              str(lora))
    with pytest.raises(UnknownModelError, match=r"style\.safetensors.*LoRA.*models/loras"):
        load_checkpoint(lora)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UnknownModelError, match="notes.txt"):
        load_checkpoint(text)
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(UnknownModelError, match="broken.safetensors"):
        load_checkpoint(garbage)


def test_load_vae_from_single_file_and_folder(tiny_sd, tmp_path):
    vae = tiny_sd.components["vae"]
    path = tmp_path / "tiny-vae.safetensors"
    # A standalone VAE file has bare encoder./decoder. keys; its config follows from the shapes.
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), 2, prefix="").items()}, str(path))
    from_file = load_vae(path)
    _same_weights(vae, from_file.vae)
    assert from_file.downscale == 2 and from_file.scaling_factor == 0.18215
    _same_weights(vae, load_vae(tiny_sd.folder).vae)
    xl = tmp_path / "my-xl-vae.safetensors"
    xl.write_bytes(path.read_bytes())
    assert load_vae(xl).scaling_factor == 0.13025
    with pytest.raises(UnknownModelError, match="full checkpoint"):
        load_vae(tiny_sd.single_file)


def test_vae_and_lora_names(tiny_sd, tmp_path):
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    (config.model_dir("vae") / "a.safetensors").write_bytes(b"")
    folder = config.model_dir("vae") / "b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (config.model_dir("loras") / "sub").mkdir()
    (config.model_dir("loras") / "sub" / "l.safetensors").write_bytes(b"")
    assert vae_names(config) == ["a.safetensors", "b"]
    assert lora_names(config) == ["sub/l.safetensors"]


def test_embedded_model_loads_when_present():
    from nodegraph.diffusion.loading import EMBEDDED_DIR

    if not (EMBEDDED_DIR / "model_index.json").exists():
        pytest.skip("the embedded model has not been exported yet")
    ckpt = load_checkpoint(EMBEDDED_DIR, name=EMBEDDED_NAME)
    assert ckpt.model.arch == "embedded" and ckpt.clip.tokenizers and ckpt.vae.vae is not None


def test_config_files_written_by_detect_are_json(tiny_sd, tmp_path):
    found = detect(tiny_sd.single_file)
    folder = found.write(tmp_path / "cfg")
    assert json.loads((folder / "unet" / "config.json").read_text())["cross_attention_dim"] == 32
    assert "unet" in found.components and Path(folder / "tokenizer" / "tokenizer.json").exists()


# ---- the loader nodes in a real engine ----------------------------------------------------------------------------

def _engine(config: EngineConfig):
    from nodegraph.engine import Engine
    from nodegraph.registry import Registry

    registry = Registry.load(builtins=("nodes.utils", "nodes.loaders"), entry_points=False, source_plugins=False)
    assert not registry.errors
    return Engine(config, registry=registry)


def _outputs(engine, prompt, node_id: str):
    from nodegraph.executor import cache_keys

    keys, _ = cache_keys(prompt, engine.config)
    return engine.cache.get(keys[node_id]).outputs


def test_checkpoint_and_vae_loader_nodes(tiny_sd, tmp_path):
    import os
    import shutil

    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    ckpt_path = config.model_dir("checkpoints") / "tiny.safetensors"
    shutil.copy(tiny_sd.single_file, ckpt_path)
    shutil.copytree(tiny_sd.folder / "vae", config.model_dir("vae") / "tiny-vae")
    engine = _engine(config)
    info = engine.registry.object_info(config)
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0][:2] == [EMBEDDED_NAME,
                                                                                        "tiny.safetensors"]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert {info[n]["category"] for n in ("CheckpointLoaderSimple", "VAELoader", "LoraLoader",
                                          "UpscaleModelLoader")} == {"loaders"}
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
             "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-vae"}},
             "3": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
             "4": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    prompt = engine.prepare(graph)
    first = engine.run(prompt)
    assert first.status == "success", first.error
    model, clip, vae = _outputs(engine, prompt, "1")
    _same_weights(tiny_sd.components["unet"], model.unet)
    assert clip.tokenizers and vae.scaling_factor == 0.18215 and model.nbytes > 0
    _same_weights(tiny_sd.components["vae"], _outputs(engine, engine.prepare(graph), "2")[0].vae)
    again = engine.run(engine.prepare(graph))
    assert again.executed == [] and set(again.cached) == {"3", "4"}
    st = ckpt_path.stat()
    os.utime(ckpt_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed on disk: reload
    third = engine.run(engine.prepare(graph))
    assert "1" in third.executed and "2" not in third.executed


def test_loader_node_refuses_pickles_with_the_reason(tmp_path):
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    torch.save({"a": torch.zeros(1)}, str(config.model_dir("checkpoints") / "old.ckpt"))
    engine = _engine(config)
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "old.ckpt"}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    with pytest.raises(ValidationReport) as info:  # refused up front, with the reason, not as a missing option
        engine.prepare(graph)
    message = info.value.node_errors["1"]["errors"][0]["message"]
    assert "pickle" in message and "safetensors" in message


def test_upscale_loader_says_how_to_install_spandrel(tmp_path):
    import importlib.util

    if importlib.util.find_spec("spandrel") is not None:
        pytest.skip("spandrel is installed here")
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models")
    config.ensure_dirs()
    save_file({"w": torch.zeros(1)}, str(config.model_dir("upscale_models") / "x4.safetensors"))
    engine = _engine(config)
    graph = {"1": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "x4.safetensors"}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    result = engine.run(engine.prepare(graph))
    assert result.status == "error" and "pip install 'nodegraph[upscale]'" in result.error.exception_message


def test_sdxl_single_file_loads_identical_to_folder(tiny_sdxl):
    folder = load_checkpoint(tiny_sdxl.folder, tiny_sdxl.config)
    single = load_checkpoint(tiny_sdxl.single_file, tiny_sdxl.config)
    assert folder.model.arch == single.model.arch == "sdxl"
    assert len(single.clip.encoders) == len(single.clip.tokenizers) == 2
    for name, loaded in (("unet", single.model.unet), ("vae", single.vae.vae),
                         ("text_encoder", single.clip.encoders[0]), ("text_encoder_2", single.clip.encoders[1])):
        _same_weights(tiny_sdxl.components[name], loaded)
    _same_weights(folder.clip.encoders[1], single.clip.encoders[1])
    assert single.vae.scaling_factor == 0.13025
    assert single.clip.tokenizers[1].pad_token == "!"
    ids = single.clip.tokenizers[1]("a red circle", return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = single.clip.encoders[1](ids).text_embeds
        assert torch.equal(pooled, tiny_sdxl.components["text_encoder_2"](ids).text_embeds)
