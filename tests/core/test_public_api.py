"""The node-author API: the built-in packs use nothing else, it type-checks, and plugins can add samplers."""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nodegraph import api
from nodegraph.testing import build_engine, build_registry, plugin_module, run_graph

ROOT = Path(__file__).resolve().parents[2]
PACKS = sorted((ROOT / "nodes").glob("*.py"))


def _pack_imports(path: Path) -> list[tuple[int, str, int]]:
    """(line, module, relative level) of every import in a pack file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level))
    return found


def forbidden_imports(path: Path) -> list[str]:
    """Imports of nodegraph internals (anything but nodegraph.api) or of modules outside the pack."""
    siblings = {p.stem for p in PACKS}
    bad = []
    for line, module, level in _pack_imports(path):
        top = module.split(".")[0]
        if level == 0 and top in ("nodegraph", "nodes") and module != "nodegraph.api":
            bad.append(f"{path.name}:{line} imports {module}")
        elif level > 1 or (level == 1 and top not in siblings):
            bad.append(f"{path.name}:{line} imports {'.' * level}{module} (outside the pack)")
    return bad


def test_builtin_packs_import_only_the_public_api() -> None:
    assert len(PACKS) >= 9
    problems = [p for path in PACKS for p in forbidden_imports(path)]
    assert problems == [], "built-in packs must import only nodegraph.api: " + "; ".join(problems)
    assert all(any(m == "nodegraph.api" for _, m, _ in _pack_imports(p)) for p in PACKS if p.stem != "__init__")


def test_the_import_check_catches_internals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from nodegraph.diffusion.loading import load_vae\nimport nodegraph.config\n"
                   "from nodegraph import api\nfrom ..elsewhere import x\n")
    assert len(forbidden_imports(bad)) == 4


def test_every_public_name_exists_and_functions_are_documented() -> None:
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"nodegraph.api.{name} has no docstring"


@pytest.mark.slow
def test_the_public_api_type_checks_with_mypy(tmp_path: Path) -> None:
    if shutil.which("mypy") is None and not _has_module("mypy"):
        pytest.skip("mypy is not installed (pip install 'nodegraph[test]')")
    cfg = tmp_path / "mypy.ini"
    cfg.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\nwarn_unused_ignores = False\n"
                   "[mypy-torch.*,diffusers.*,transformers.*,accelerate.*,safetensors.*,scipy.*,networkx.*,"
                   "spandrel.*,ray.*,aiohttp.*]\nfollow_imports = skip\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir",
                           str(tmp_path / "cache"), "nodegraph/api.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 120


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---- samplers added by plugins ------------------------------------------------------------------------------------

def _euler(denoiser: api.Denoiser, x: Any, sigmas: Any, *, generator: Any, callback: api.StepCallback) -> Any:
    for i in range(len(sigmas) - 1):
        x0 = denoiser(x, float(sigmas[i]))
        x = x + (x - x0) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
        callback(i + 1, len(sigmas) - 1, x0)
    return x


def _linear(steps: int, train: Any) -> Any:
    import numpy as np

    return np.append(np.linspace(float(train[-1]), float(train[0]), steps), 0.0)


SAMPLER_PLUGIN = plugin_module(name="sampler_plugin", NODEGRAPH_SAMPLERS=[api.SamplerDef("k_euler_test", _euler)],
                               NODEGRAPH_SCHEDULERS=[api.ScheduleDef("linear_test", _linear)])


def _ksampler_options(engine: Any) -> tuple[list[str], list[str]]:
    entry = engine.registry.get("KSampler").catalogue_entry(engine.config)["input"]["required"]
    return entry["sampler_name"][0], entry["scheduler"][0]


def test_plugin_samplers_join_the_ksampler_combos_of_their_engine_only(tmp_path: Path, nodegraph_config) -> None:
    with_plugin = build_engine(nodegraph_config, build_registry(SAMPLER_PLUGIN))
    samplers, schedules = _ksampler_options(with_plugin)
    assert samplers[0] == "euler" and samplers[-1] == "k_euler_test"
    assert schedules[-1] == "linear_test"
    other = api.EngineConfig(home=tmp_path / "other")
    plain = build_engine(other, build_registry())
    samplers, schedules = _ksampler_options(plain)
    assert "k_euler_test" not in samplers and "linear_test" not in schedules


def test_a_plugin_sampler_validates_and_bad_pairs_name_the_fix(nodegraph_config) -> None:
    engine = build_engine(nodegraph_config, build_registry(SAMPLER_PLUGIN))
    table = api.SamplerRegistry.from_plugins(engine.registry)
    assert table.unsupported_pair("k_euler_test", "karras") is None
    assert table.unsupported_pair("k_euler_test", "linear_test") is None
    reason = table.unsupported_pair("euler", "linear_test")
    assert reason and "plugin samplers only" in reason and "k_euler_test" in reason
    assert "choose one of" in (table.unsupported_pair("nope", "normal") or "")


def test_clashing_or_malformed_declarations_are_plugin_errors() -> None:
    clash = plugin_module(name="clash_plugin", NODEGRAPH_SAMPLERS=[api.SamplerDef("euler", _euler), "not a def"])
    registry = build_registry(clash, builtins=())
    table = api.SamplerRegistry.from_plugins(registry)
    assert "euler" not in table.samplers
    errors = [e for p, e in registry.errors if p == "clash_plugin"]
    assert any("already provided by nodegraph" in e for e in errors)
    assert any("SamplerDef" in e for e in errors)


def test_the_sampler_table_does_not_travel_to_other_processes(nodegraph_config) -> None:
    import pickle

    engine = build_engine(nodegraph_config, build_registry(SAMPLER_PLUGIN))
    assert "k_euler_test" in engine.config.samplers.samplers
    copy = pickle.loads(pickle.dumps(engine.config))
    assert api.sampler_names(copy) == list(api.SamplerRegistry().sampler_names())


@pytest.mark.slow
def test_a_plugin_euler_sampler_matches_the_builtin_euler(tiny_checkpoint) -> None:
    import torch

    captured: dict[str, Any] = {}

    class Keep(api.Node):
        """Keep a latent."""

        OUTPUT_NODE = True
        DETERMINISTIC = False
        INPUTS = {"samples": api.Link("LATENT")}

        def execute(self, ctx: api.ExecutionContext, samples: api.Latent) -> tuple[()]:
            captured[ctx.node_id] = samples["samples"]
            return ()

    engine = build_engine(tiny_checkpoint.config, build_registry(SAMPLER_PLUGIN, Keep))
    graph: dict[str, Any] = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint.name}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
    }
    for sampler in ("euler", "k_euler_test"):
        graph[sampler] = {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 7, "steps": 4, "cfg": 5.0, "sampler_name": sampler, "scheduler": "karras",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0], "denoise": 1.0}}
        graph[f"keep_{sampler}"] = {"class_type": "Keep", "inputs": {"samples": [sampler, 0]}}
    run_graph(engine, graph)
    builtin, plugin = captured["keep_euler"], captured["keep_k_euler_test"]
    assert builtin.shape == plugin.shape and torch.isfinite(plugin).all()
    assert torch.allclose(builtin, plugin, atol=2e-3, rtol=1e-3), (builtin - plugin).abs().max()


# ---- context accessors --------------------------------------------------------------------------------------------

class Accessors(api.Node):
    """Exercise ctx.files and ctx.preview: read an input image, preview it, save it, refuse an escaping path."""

    OUTPUT_NODE = True
    DETERMINISTIC = False
    INPUTS = {"name": api.String("in.png")}

    def execute(self, ctx: api.ExecutionContext, name: str) -> api.NodeOutput:
        image = api.pil_to_image(ctx.files.open_image(name))
        ctx.preview(image, 1, 2)
        try:
            ctx.files.path("output", "../../outside.png")
        except api.UnsafePathError as exc:
            refused = str(exc)
        else:
            refused = ""
        entries = ctx.files.save_images(image, "sub/acc")
        return api.NodeOutput((), {"images": entries, "refused": [refused],
                                   "device": [str(ctx.devices.device)],
                                   "samplers": [len(ctx.samplers.sampler_names())]})


def test_context_accessors_read_preview_save_and_refuse_escapes(nodegraph_config) -> None:
    from PIL import Image

    from nodegraph.events import NodeProgress

    Image.new("RGB", (8, 6), (255, 0, 0)).save(nodegraph_config.input_dir / "in.png")
    engine = build_engine(nodegraph_config, build_registry(Accessors, builtins=()))
    result = run_graph(engine, {"1": {"class_type": "Accessors", "inputs": {"name": "in.png"}}}, record_events=True)
    ui = result.outputs["1"]
    assert ui["images"] == [{"filename": "acc_00001_.png", "subfolder": "sub", "type": "output"}]
    assert (nodegraph_config.outputs_dir / "sub" / "acc_00001_.png").is_file()
    assert "../../outside.png" in ui["refused"][0]  # refused, naming the path
    assert ui["device"] == ["cpu"] and ui["samplers"][0] >= 18
    previews = [e.preview for e in result.events if isinstance(e, NodeProgress) and e.preview]
    assert previews and previews[0][0] == "JPEG" and previews[0][1][:2] == b"\xff\xd8"
    with pytest.raises(AssertionError, match="not in"):
        run_graph(engine, {"1": {"class_type": "Accessors", "inputs": {"name": "missing.png"}}})
