"""The official ComfyUI frontend reads what ``api_to_ui`` writes for dynamic inputs: loading our editor-format export
of an API prompt (grown inputs, DynamicCombo options with widgets and links) and queueing it gives that prompt back."""

from __future__ import annotations

from typing import Any

import pytest

from nodegraph.registry import BUILTIN_PACKS
from nodegraph.testing import build_registry
from nodegraph.ui_export import api_to_ui

from .helpers import strip_meta
from .test_dynamic_inputs_browser import Session, session  # noqa: F401 - the server and editor page fixture

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 255}},
    "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
    "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
    "4": {"class_type": "PrimitiveInt", "inputs": {"value": 24}},
    "5": {"class_type": "PrimitiveFloat", "inputs": {"value": 1.5}},
    "10": {"class_type": "BatchImagesNode", "inputs": {"images.image0": ["1", 0], "images.image1": ["2", 0],
                                                       "images.image2": ["1", 0]}},
    "11": {"class_type": "BatchMasksNode", "inputs": {"masks.mask0": ["3", 0], "masks.mask1": ["3", 0]}},
    "13": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["10", 0], "resize_type": "scale dimensions", "resize_type.width": ["4", 0],
        "resize_type.height": 16, "resize_type.crop": "disabled", "scale_method": "bilinear"}},
    "14": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["11", 0], "resize_type": "match size", "resize_type.match": ["1", 0], "resize_type.crop": "center",
        "scale_method": "nearest-exact"}},
    "15": {"class_type": "ResizeImageMaskNode", "inputs": {
        "input": ["13", 0], "resize_type": "scale by multiplier", "resize_type.multiplier": 0.5,
        "scale_method": "area"}},
    "17": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a * c + 1", "values.a": ["4", 0],
                                                           "values.c": ["5", 0]}},
    "18": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}},
    "19": {"class_type": "PreviewAny", "inputs": {"source": ["17", 0]}},
    "20": {"class_type": "PreviewImage", "inputs": {"images": ["14", 0]}},
}


def test_the_editor_queues_our_export_unchanged(session: Session) -> None:  # noqa: F811
    ui = api_to_ui(PROMPT, build_registry(builtins=BUILTIN_PACKS))
    session.page.evaluate("async (wf) => { await app.loadGraphData(wf); }", ui)
    queued = strip_meta(session.prompt()["output"])
    assert queued == PROMPT
    assert not session.page_errors, session.page_errors
