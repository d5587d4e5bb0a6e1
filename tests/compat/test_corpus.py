"""UI→API conversion equals the API form ComfyUI itself wrote, on the ComfyUI_examples corpus (see corpus/SOURCE.md).

Every corpus file holds a saved editor workflow and the prompt ComfyUI produced from it. Each node of a class our
catalogue has must convert to the same inputs, value for value (links as [id, slot]); inputs our node does not
declare are ignored, and an input the stored prompt lacks (the file predates it) must take our default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph.registry import Registry
from nodegraph.testing import build_registry
from nodegraph.ui_format import ui_to_api, widget_default

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.json"))
ABSENT = "<absent>"


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The full built-in catalogue."""
    return build_registry()


def compare(data: dict[str, Any], registry: Registry) -> tuple[int, int, list[str]]:
    """(equal nodes, compared nodes, mismatch descriptions) of one corpus file."""
    api = ui_to_api(data["workflow"], registry)
    equal = compared = 0
    problems: list[str] = []
    for node_id, expected in data["prompt"].items():
        definition = registry.get(expected["class_type"])
        if definition is None:
            continue
        compared += 1
        got = api.get(node_id)
        if got is None or got["class_type"] != expected["class_type"]:
            problems.append(f"{node_id} ({expected['class_type']}): not in the conversion")
            continue
        before = len(problems)
        for name, spec in definition.meta.inputs.items():
            want, have = expected["inputs"].get(name, ABSENT), got["inputs"].get(name, ABSENT)
            if want == ABSENT and have == widget_default(spec):
                continue  # an input newer than the file takes its default, as the editor does today
            if want != have:
                problems.append(f"{node_id} ({expected['class_type']}).{name}: ComfyUI {want!r}, ours {have!r}")
        equal += len(problems) == before
    return equal, compared, problems


def test_corpus_is_present():
    assert len(CORPUS) >= 40
    assert sum(p.stat().st_size for p in CORPUS) < 3_000_000


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_conversion_matches_comfyui(path, registry):
    data = json.loads(path.read_text(encoding="utf-8"))
    equal, compared, problems = compare(data, registry)
    assert compared > 0, "no node of a class we have"
    assert not problems, f"{data['source']}: {equal}/{compared} nodes equal; " + "; ".join(problems[:8])


def test_corpus_totals(registry, capsys):
    totals = [compare(json.loads(p.read_text(encoding="utf-8")), registry)[:2] for p in CORPUS]
    equal, compared = sum(t[0] for t in totals), sum(t[1] for t in totals)
    with capsys.disabled():
        print(f"\nComfyUI_examples corpus: {equal}/{compared} nodes equal in {len(CORPUS)} workflows")
    assert compared >= 500 and equal == compared


#: Inputs naming a file in a model or input folder: the only problems a runnable saved workflow may have here.
FILE_INPUTS = {"ckpt_name", "vae_name", "lora_name", "model_name", "image", "control_net_name", "unet_name",
               "clip_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4", "style_model_name", "gligen_name",
               "hypernetwork_name", "config_name", "upscale_model", "video", "audio", "latent"}


def test_runnable_workflows_validate_but_for_missing_files(tmp_path):
    """Workflows made only of classes we have validate on the embedded model (checkpoint name rewritten); the
    only problems left are files this machine lacks (LoRAs, upscale models, input images)."""
    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine
    from nodegraph.validation import ValidationReport

    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    checked = clean = 0
    for path in CORPUS:
        data = json.loads(path.read_text(encoding="utf-8"))
        if any(engine.registry.get(n["class_type"]) is None for n in data["prompt"].values()):
            continue
        for node in data["workflow"]["nodes"]:
            if node["type"] == "CheckpointLoaderSimple":
                node["widgets_values"] = ["nodegraph-shapes-v1"]
        checked += 1
        try:
            engine.prepare(data["workflow"])
            clean += 1
        except ValidationReport as report:
            for node_id, entry in report.node_errors.items():
                for error in entry["errors"]:
                    assert error["type"] == "value_not_in_list" and \
                        error["extra_info"].get("input_name") in FILE_INPUTS, (path.name, node_id, error)
    assert checked >= 10 and clean >= 4
