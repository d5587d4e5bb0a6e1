"""ComfyUI's official workflow templates (comfyui-workflow-templates-json 0.1.123, MIT; the test extra installs it) as
the compatibility oracle: how many use only node classes we have, and every one of those converts from the editor's
format and validates, failing only because its model and input files are not here.

``python tests/compat/template_coverage.py`` prints the coverage and the missing classes most templates need.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph.config import EngineConfig
from nodegraph.engine import Engine
from nodegraph.validation import ValidationReport
from tests.compat.template_coverage import coverage, non_api_templates, our_classes, template_classes, templates_folder

#: Floor of templates whose every node class we have (raise it as classes are added; never lower it to pass).
MIN_COVERED = 110
#: Inputs naming a file in a models or input folder: the only inputs allowed to fail here.
FILE_INPUTS = {"ckpt_name", "unet_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "clip_name3",
               "clip_name4", "lora_name", "control_net_name", "style_model_name", "model_name", "text_encoder",
               "image", "file", "video", "audio", "name"}
#: Templates whose other errors are expected, with the reason.
EXPECTED = {
    "image_lens_t2i": "CLIPLoader type 'lens' is newer than our reference, ComfyUI v0.8.0",
    "image_lens_turbo_t2i": "CLIPLoader type 'lens' is newer than our reference, ComfyUI v0.8.0",
    "image_boogu_image_0_1_turbo_t2i": "CLIPLoader type 'boogu' is newer than our reference, ComfyUI v0.8.0",
    "video_ltx2_i2v_lora": "the template is broken: its subgraph output points to link 265, which does not exist, "
                           "so SaveVideo gets no video",
}

FOLDER = templates_folder()
pytestmark = pytest.mark.skipif(FOLDER is None, reason="pip install 'nodegraph[test]' (comfyui-workflow-templates-json)")


def _covered() -> list[Path]:
    if FOLDER is None:
        return []
    known = our_classes()
    out = []
    for path in non_api_templates(FOLDER):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "nodes" in data and not template_classes(data) - known:
            out.append(path)
    return out


def test_template_coverage_floor():
    found = coverage(non_api_templates(FOLDER), our_classes())
    print("\n" + found.summary(10))
    assert found.total >= 300
    assert found.covered >= MIN_COVERED, found.summary(10)


@pytest.mark.slow
def test_covered_templates_validate_but_for_their_files(tmp_path):
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    covered = _covered()
    assert len(covered) >= MIN_COVERED
    problems: dict[str, list[str]] = {}
    for path in covered:
        try:
            engine.prepare(json.loads(path.read_text(encoding="utf-8")))
            continue
        except ValidationReport as report:
            found = [f"{entry['class_type']}.{error['extra_info'].get('input_name')}: {error['message']}"
                     for entry in report.node_errors.values() for error in entry["errors"]
                     if not (error["type"] == "value_not_in_list"
                             and error["extra_info"].get("input_name") in FILE_INPUTS)]
            if not report.node_errors:
                found.append(str(report))
        if found and path.stem not in EXPECTED:
            problems[path.stem] = found
    assert not problems, problems
    assert set(EXPECTED) <= {p.stem for p in covered}  # the exceptions stay true: drop one once it is fixed
