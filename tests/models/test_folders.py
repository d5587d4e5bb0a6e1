"""The one table of model folders and extensions: what is listed is what the loaders load."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodegraph.config import EngineConfig
from nodegraph.models import folders


@pytest.fixture
def config(tmp_path: Path) -> EngineConfig:
    cfg = EngineConfig(home=tmp_path / "home")
    cfg.ensure_dirs()
    ckpts = cfg.model_dir("checkpoints")
    for name in ("a.safetensors", "b.sft", "c.ckpt", "d.pt", "notes.txt", "sub/e.SAFETENSORS"):
        (ckpts / name).parent.mkdir(parents=True, exist_ok=True)
        (ckpts / name).write_bytes(b"x")
    pipe = ckpts / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text("{}")
    (pipe / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    loras = cfg.model_dir("loras")
    (loras / "folder").mkdir()
    (loras / "folder" / "model_index.json").write_text("{}")
    (loras / "style.safetensors").write_bytes(b"x")
    vae = cfg.model_dir("vae")
    (vae / "kl").mkdir()
    (vae / "kl" / "config.json").write_text("{}")
    (vae / "kl" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    return cfg


def test_lists_only_what_loaders_load(config: EngineConfig) -> None:
    # .sft, .txt and files inside a diffusers folder are not listed; pickles are refused by default.
    assert folders.list_models(config, "checkpoints") == ["a.safetensors", "pipe", "sub/e.SAFETENSORS"]
    assert folders.list_models(config, "loras") == ["style.safetensors"]  # a LoRA is never a folder
    assert folders.list_models(config, "vae") == ["kl"]


def test_pickles_listed_only_when_allowed(config: EngineConfig) -> None:
    assert ".ckpt" not in folders.extensions("checkpoints", config)
    config.allow_unsafe_pickle = True
    assert folders.extensions("checkpoints", config) == (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
    assert folders.list_models(config, "checkpoints") == ["a.safetensors", "c.ckpt", "d.pt", "pipe",
                                                           "sub/e.SAFETENSORS"]


def test_check_listed_says_why(config: EngineConfig) -> None:
    ckpts = config.model_dir("checkpoints")
    folders.check_listed(ckpts / "a.safetensors", "checkpoints", config)
    folders.check_listed(ckpts / "pipe", "checkpoints", config)
    with pytest.raises(folders.UnlistedModelError, match="--allow-unsafe-pickle"):
        folders.check_listed(ckpts / "c.ckpt", "checkpoints", config)
    with pytest.raises(folders.UnlistedModelError, match="use .safetensors"):
        folders.check_listed(ckpts / "b.sft", "checkpoints", config)
    with pytest.raises(folders.UnlistedModelError, match="folder without model_index.json"):
        folders.check_listed(ckpts / "sub", "checkpoints", config)
    with pytest.raises(folders.UnlistedModelError, match="known folders: checkpoints, clip, clip_vision"):
        folders.extensions("controlnets", config)


class _Registry:
    """The one registry method the table reads."""

    def __init__(self, results: list) -> None:
        self.results = results

    def hook_results(self, name: str) -> list:
        assert name == "nodegraph_model_folders"
        return self.results


def test_plugin_folders_join_the_table(config: EngineConfig) -> None:
    registry = _Registry([("cn", {"ipadapter": [".safetensors", "pth"]}), ("bad", None),
                          ("more", {"loras": [".safetensors"]})])
    assert "ipadapter" in folders.kinds(registry)
    assert folders.kinds(registry) == sorted(set(folders.BUILTIN) | {"ipadapter"})
    # A plugin's pickle extension is filtered like ours.
    assert folders.extensions("ipadapter", config, registry) == (".safetensors",)
    config.allow_unsafe_pickle = True
    assert ".pth" in folders.extensions("ipadapter", config, registry)
    assert folders.extensions("loras", config, registry).count(".safetensors") == 1
    (config.model_dir("ipadapter")).mkdir()
    (config.model_dir("ipadapter") / "canny.safetensors").write_bytes(b"x")
    assert folders.list_models(config, "ipadapter", registry) == ["canny.safetensors"]


def test_listings_are_cached_until_the_folder_tree_changes(tmp_path, monkeypatch) -> None:
    import os
    import pickle

    config = EngineConfig(home=tmp_path)
    config.ensure_dirs()
    root = config.model_dir("checkpoints")
    (root / "a.safetensors").write_bytes(b"x")
    old = 1_000_000_000  # settle the tree: mtimes far in the past, so the listing is remembered
    for folder in (root,):
        os.utime(folder, ns=(old, old))
    scans = []
    real_scan = folders._scan
    monkeypatch.setattr(folders, "_scan", lambda *a: scans.append(a) or real_scan(*a))
    assert folders.list_models(config, "checkpoints") == ["a.safetensors"]
    assert folders.list_models(config, "checkpoints") == ["a.safetensors"] and len(scans) == 1  # remembered
    (root / "sub").mkdir()
    (root / "sub" / "b.safetensors").write_bytes(b"x")  # a change anywhere below the folder invalidates it
    assert folders.list_models(config, "checkpoints") == ["a.safetensors", "sub/b.safetensors"] and len(scans) == 2
    assert folders.list_models(config, "checkpoints") == ["a.safetensors", "sub/b.safetensors"]
    assert len(scans) == 3  # just changed ("racy"): scanned again rather than trusted
    copy = pickle.loads(pickle.dumps(config))  # worker processes get an empty cache
    assert folders.listing_cache(copy) is not folders.listing_cache(config)
