"""The ModelManager wired into the engine: loader nodes return handles, derived handles, freeing, the text limit,
model combos that say why a file is refused, and the CLI's budget flags."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nodegraph.cli import build_parser, make_config  # noqa: E402
from nodegraph.config import EngineConfig  # noqa: E402
from nodegraph.diffusion.loading import checkpoint_names  # noqa: E402
from nodegraph.models import ModelHandle, ModelManager  # noqa: E402
from nodegraph.models.memory import parse_bytes  # noqa: E402
from nodegraph.testing_graphs import capture_engine as make_engine
from nodegraph.testing_graphs import run_captured as run
from nodegraph.testing_graphs import txt2img_graph as txt2img
from nodegraph.validation import ValidationReport  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_sd):
    return make_engine(dataclasses.replace(tiny_sd.config, plugin_dirs=[]))


def test_loaders_return_handles_and_derived_clips_keep_the_weights(engine) -> None:
    graph = txt2img(steps=2)
    graph["skip"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["ckpt", 1], "stop_at_clip_layer": -2}}
    graph["pos"]["inputs"]["clip"] = ["skip", 0]
    graph["base"] = {"class_type": "Capture", "inputs": {"value": ["ckpt", 1]}}
    graph["skipped"] = {"class_type": "Capture", "inputs": {"value": ["skip", 0]}}
    graph["vae"] = {"class_type": "Capture", "inputs": {"value": ["ckpt", 2]}}
    result, cap = run(engine, graph)
    result.raise_for_status()
    base, skipped = cap["base"], cap["skipped"]
    assert isinstance(base, ModelHandle) and isinstance(skipped, ModelHandle) and isinstance(cap["vae"], ModelHandle)
    assert base.get().stop_at_layer != -2 and skipped.get().stop_at_layer == -2  # the loader's CLIP is unchanged
    assert skipped.get().encoders[0] is base.get().encoders[0]  # one copy of the weights
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle

        pickle.dumps(base)
    assert cap["img"].shape == (1, 64, 64, 3)


def test_free_drops_the_models_and_cached_handles_load_them_again(engine) -> None:
    run(engine, txt2img(steps=2))[0].raise_for_status()
    manager = engine.services.find(ModelManager)
    assert manager is not None and len(manager) >= 1
    loaded = len(manager)
    engine.free(unload_models=False)  # accelerator memory only: results and models stay
    assert len(manager) == loaded
    manager.release()  # models go, cached results (holding handles) stay
    assert len(manager) == 0 and manager.nbytes == 0
    reloads = manager.stats.reloads
    result, cap = run(engine, txt2img(steps=2, seed=7))
    assert "ckpt" in result.raise_for_status().cached  # the cached handle ...
    assert manager.stats.reloads == reloads + 1  # ... read the checkpoint again for the sampler
    assert torch.isfinite(cap["img"]).all()
    engine.free()  # everything: cached results and models
    assert len(manager) == 0 and "ckpt" in run(engine, txt2img(steps=2, seed=7))[0].executed


def test_clip_text_encode_uses_the_engines_text_limit(tiny_sd) -> None:
    limits = dataclasses.replace(tiny_sd.config.limits, max_text_chunks=1)
    engine = make_engine(dataclasses.replace(tiny_sd.config, limits=limits, plugin_dirs=[]))
    long_text = " ".join(["red circle"] * 200)
    result, _ = run(engine, txt2img(positive=long_text, steps=1))
    assert result.status == "error" and result.error.node_id == "pos"
    assert "max_text_chunks" in result.error.exception_message
    run(make_engine(dataclasses.replace(tiny_sd.config, plugin_dirs=[])),
        txt2img(positive=long_text, steps=1))[0].raise_for_status()  # the default limit takes it


def test_model_combos_say_why_a_file_is_not_offered(tmp_path) -> None:
    config = EngineConfig(home=tmp_path, models_dir=tmp_path / "models", plugin_dirs=[])
    config.ensure_dirs()
    torch.save({"a": torch.zeros(1)}, str(config.model_dir("checkpoints") / "old.ckpt"))
    (config.model_dir("checkpoints") / "other.sft").write_bytes(b"\0" * 8)
    assert checkpoint_names(config) == ["nodegraph-shapes-v1"]  # what the loaders would load, no more
    engine = make_engine(config)
    for name, reason in (("old.ckpt", "--allow-unsafe-pickle"), ("other.sft", "use .safetensors"),
                         ("absent.safetensors", "is not among the options")):
        graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
                 "2": {"class_type": "Capture", "inputs": {"value": ["1", 0]}}}
        with pytest.raises(ValidationReport) as info:
            engine.prepare(graph)
        errors = info.value.node_errors["1"]["errors"]
        assert errors[0]["type"] == "value_not_in_list" and reason in errors[0]["message"], errors
    assert "old.ckpt" in checkpoint_names(dataclasses.replace(config, allow_unsafe_pickle=True))


def test_cli_budget_flags(capsys) -> None:
    args = build_parser().parse_args(["run", "w.json", "--ram-budget", "6G", "--vram-budget", "512M"])
    config = make_config(args)
    assert config.model_ram_budget == 6 * 1024**3 and config.model_vram_budget == 512 * 1024**2
    assert make_config(build_parser().parse_args(["run", "w.json"])).model_ram_budget is None
    for flag, value in (("--ram-budget", "lots"), ("--ram-budget", "-1G"), ("--ram-budget", "150%")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "w.json", f"{flag}={value}"])
        assert "not understood; write e.g. 6G" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--vram-budget", "50%"])
        assert "no GPU found" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["inf", "1e400G", "nan", "-5", "%", "101%"])
def test_parse_bytes_refuses_unbounded_and_negative_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not understood"):
        parse_bytes(text)
