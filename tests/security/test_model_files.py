"""A model file is data: its header never writes files, and a model folder never imports arbitrary modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodegraph.diffusion.detect import (MAX_STORED_FILE_BYTES, METADATA_KEY, STORED_FILES, Detected,
                                        UnknownModelError, detect)
from nodegraph.diffusion.loading import load_checkpoint, quiet_libraries

UNET_CFG = json.dumps({"_class_name": "UNet2DConditionModel", "cross_attention_dim": 32})
BASE = {"unet/config.json": UNET_CFG, "vae/config.json": "{}", "scheduler/scheduler_config.json": "{}"}


def _crafted(path: Path, files: dict[str, str]) -> Path:
    """A .safetensors file whose header carries ``files`` under the nodegraph metadata key."""
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(path),
              metadata={METADATA_KEY: json.dumps({"format": 1, "files": files})})
    return path


def _all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def jail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private temp folder two levels down, so that ``../../x`` from a temp dir lands in ``tmp_path``."""
    tmp = tmp_path / "t1" / "t2"
    tmp.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("hostile", ["../../evil.py", "unet/../../../evil.py", "ABSOLUTE", "unet\\..\\..\\evil.py",
                                     "scheduler/evil.py", "unet/config.json\0.py", "plugins/evil.py",
                                     "C:/evil.py", "tokenizer/../../evil.py"])
def test_header_names_outside_the_allow_list_are_refused_and_nothing_is_written(tmp_path, jail, hostile):
    sentinel = tmp_path / "abs-sentinel.py"
    name = str(sentinel) if hostile == "ABSOLUTE" else hostile
    model = _crafted(tmp_path / "crafted.safetensors",
                     dict(BASE, **{name: "open('/tmp/pwned', 'w').write('x')\n"}))
    before = _all_files(tmp_path)
    with pytest.raises(UnknownModelError) as info:
        load_checkpoint(model)
    message = str(info.value)
    assert "crafted.safetensors" in message and repr(name)[:60] in message and "re-export" in message
    assert _all_files(tmp_path) == before, "loading a refused model wrote files"
    assert not sentinel.exists() and not (tmp_path / "evil.py").exists()
    assert not list(jail.glob("nodegraph-*")), "a config folder was left behind"


def test_oversized_non_text_and_non_json_entries_are_refused(tmp_path):
    cases = {"size": dict(BASE, **{"tokenizer/merges.txt": "a b\n" * (MAX_STORED_FILE_BYTES // 4 + 1)}),
             "bytes": dict(BASE, **{"tokenizer/vocab.json": 7}),
             "json": dict(BASE, **{"unet/config.json": "print('hi')"}),
             "list": dict(BASE, **{"unet/config.json": "[1, 2]"}),
             "no-unet": {"vae/config.json": "{}"}, "no-vae": {"unet/config.json": UNET_CFG}}
    for files in cases.values():
        with pytest.raises(UnknownModelError, match="bad.safetensors"):
            detect(_crafted(tmp_path / "bad.safetensors", files))
    path = tmp_path / "notamap.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps({"files": ["../x"]})})
    with pytest.raises(UnknownModelError, match="must map file names"):
        detect(path)


def test_a_nodegraph_export_loads_without_writing_any_file(tiny_sd, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must not create temporary files or folders")

    for name in ("mkdtemp", "mkstemp", "TemporaryDirectory", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    ckpt = load_checkpoint(tiny_sd.single_file, tiny_sd.config)
    ids = ckpt.clip.tokenizers[0]("a photo of a cat").input_ids
    assert ids == tiny_sd.components["tokenizer"]("a photo of a cat").input_ids


def test_a_damaged_header_vocabulary_is_refused(tiny_sd, tmp_path):
    from safetensors.torch import load_file

    from nodegraph.diffusion.detect import read_header

    files = json.loads(read_header(tiny_sd.single_file).metadata[METADATA_KEY])["files"]
    for damage in ({"tokenizer/tokenizer.json": json.dumps({"model": {"vocab": [], "merges": []}})},
                   {"tokenizer/tokenizer_config.json": json.dumps({"tokenizer_class": "LlamaTokenizer"})}):
        path = tmp_path / "damaged.safetensors"
        save_file(load_file(str(tiny_sd.single_file)), str(path),
                  metadata={METADATA_KEY: json.dumps({"files": dict(files, **damage)})})
        with pytest.raises(UnknownModelError, match="damaged.safetensors.*tokenizer"):
            load_checkpoint(path)


def test_a_nodegraph_export_still_loads_and_writes_only_allow_listed_names(tiny_sd, tmp_path):
    found = detect(tiny_sd.single_file)
    assert set(found.files) <= set(STORED_FILES) and "unet/config.json" in found.files
    folder = found.write(tmp_path / "cfg")
    written = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert written == set(found.files)
    ckpt = load_checkpoint(tiny_sd.single_file, tiny_sd.config)
    unet = tiny_sd.components["unet"].state_dict()
    assert all(torch.equal(v, unet[k]) for k, v in ckpt.model.unet.state_dict().items())
    rogue = Detected(arch="custom", prediction_type="epsilon", files={"../evil.py": "x"})
    with pytest.raises(UnknownModelError, match="evil.py"):
        rogue.write(tmp_path / "rogue")
    assert not (tmp_path / "evil.py").exists()


PROBE = r"""
import json, sys
from pathlib import Path
from nodegraph.diffusion.loading import UnknownModelError, load_checkpoint
results = {}
for folder in sys.argv[1:]:
    try:
        load_checkpoint(Path(folder))
        results[folder] = "loaded"
    except UnknownModelError as exc:
        results[folder] = "refused: " + str(exc)
    except Exception as exc:
        results[folder] = "other: %s: %s" % (type(exc).__name__, exc)
print(json.dumps({"results": results, "imported": sorted(m for m in ("this", "antigravity", "smtpd", "webbrowser")
                                                                 if m in sys.modules)}))
"""


def test_model_index_may_name_only_diffusers_and_transformers_classes(tiny_sd, tmp_path):
    base = json.loads((tiny_sd.folder / "model_index.json").read_text())
    hostile = {"this": ("unet", ["this", "X"]), "os": ("unet", ["os", "system"]),
               "webbrowser": ("vae", ["webbrowser", "open"]), "dunder": ("unet", ["diffusers", "__loader__"]),
               "module": ("unet", ["diffusers", "utils"]), "wrongbase": ("unet", ["transformers", "CLIPTextModel"]),
               "tokenizer": ("tokenizer", ["antigravity", "CLIPTokenizer"]), "notalist": ("unet", "diffusers.X"),
               "scheduler": ("scheduler", ["smtpd", "SMTPServer"])}
    folders = []
    for label, (component, entry) in hostile.items():
        folder = tmp_path / label
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps(dict(base, **{component: entry})))
        folders.append(str(folder))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", PROBE, *folders], capture_output=True, text=True, timeout=300,
                         check=False, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["imported"] == [], report
    for folder, result in report["results"].items():
        assert result.startswith("refused: ") and "model_index.json" in result, (folder, result)
        assert "diffusers or transformers" in result


def test_the_genuine_folder_still_loads(tiny_sd):
    ckpt = load_checkpoint(tiny_sd.folder, tiny_sd.config)
    assert ckpt.extras["format"] == "diffusers" and len(ckpt.clip.tokenizers) == 1


def test_library_logging_is_restored_after_a_load(tiny_sd):
    from diffusers.utils import logging as dl
    from transformers.utils import logging as tl

    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in (dl, tl)]
    warnings.filterwarnings("ignore", "Cannot enable progress bars", UserWarning)  # HF_HUB_DISABLE_PROGRESS_BARS
    try:
        for lib in (dl, tl):
            lib.set_verbosity_info()
            lib.enable_progress_bar()
        with quiet_libraries():
            assert dl.get_verbosity() == tl.get_verbosity() == 40 and not tl.is_progress_bar_enabled()
        load_checkpoint(tiny_sd.single_file, tiny_sd.config)
        assert dl.get_verbosity() == tl.get_verbosity() == 20
        assert dl.is_progress_bar_enabled() and tl.is_progress_bar_enabled()
    finally:
        for lib, verbosity, bars in saved:
            lib.set_verbosity(verbosity)
            (lib.enable_progress_bar if bars else lib.disable_progress_bar)()


def test_a_folder_with_pickle_weights_is_refused_unless_allowed(tiny_sd, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from nodegraph.config import EngineConfig
    from nodegraph.diffusion.loading import UnsafeModelError

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_sd.folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), str(folder / "unet" / "diffusion_pytorch_model.bin"))
    weights.unlink()
    with pytest.raises(UnsafeModelError, match=r"unet/ holds only pickle weights.*--allow-unsafe-pickle"):
        load_checkpoint(folder)
    allowed = EngineConfig(home=tmp_path / "home", allow_unsafe_pickle=True)
    assert load_checkpoint(folder, allowed).model.unet is not None
