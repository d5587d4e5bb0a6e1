"""ComfyUI_examples' Chroma workflow (prompt extracted from chroma/chroma_example.png into chroma_examples/): we lack
only T5TokenizerOptions; without it (its CLIP input wired straight to the CLIPLoader) the graph validates with only
the model files missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.validation import ValidationReport

EXAMPLE = Path(__file__).parent / "chroma_examples" / "chroma_example.json"


def test_example_validates_but_for_missing_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    prompt = json.loads(EXAMPLE.read_text(encoding="utf-8"))["prompt"]
    absent = sorted({n["class_type"] for n in prompt.values() if engine.registry.get(n["class_type"]) is None})
    assert absent in ([], ["T5TokenizerOptions"])
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "T5TokenizerOptions" and absent:
            source = node["inputs"]["clip"]
            del prompt[node_id]
            for other in prompt.values():
                for name, value in other["inputs"].items():
                    if value == [node_id, 0]:
                        other["inputs"][name] = source
    with pytest.raises(ValidationReport) as info:
        engine.prepare(prompt)
    for node_id, entry in info.value.node_errors.items():
        for error in entry["errors"]:
            assert error["type"] == "value_not_in_list" and \
                error["extra_info"].get("input_name") in {"unet_name", "clip_name", "vae_name"}, (node_id, error)
    assert {"10", "13", "15"} == set(info.value.node_errors)  # CLIPLoader type chroma itself is accepted
