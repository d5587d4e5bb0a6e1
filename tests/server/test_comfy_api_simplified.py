"""A third-party ComfyUI client, comfy-api-simplified (PyPI), against a real nodegraph server, unchanged.

Its ``queue_and_wait_images`` keeps every binary WebSocket frame as an image and, only when none came, fetches the
output node's files through /history and /view. ComfyUI sends no preview frames unless previews are enabled, and
neither does ``nodegraph serve`` (``--preview-method none``), so the client gets the saved PNG; with previews sent
to every client (``auto``) it would hand back JPEG thumbnails instead (the bug of issue #13).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

comfy_api_simplified = pytest.importorskip("comfy_api_simplified")

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"
SAVE_TITLE = "Save Image"

pytestmark = pytest.mark.slow


def _workflow() -> Any:
    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    for node in prompt.values():  # the editor's "Export (API)" titles every node; the library relies on it
        node.setdefault("_meta", {"title": node["class_type"]})
    save = next(k for k, n in prompt.items() if n["class_type"] == "SaveImage")
    prompt[save]["_meta"] = {"title": SAVE_TITLE}
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "KSampler")
    prompt[sampler]["inputs"]["steps"] = 4
    wf = comfy_api_simplified.ComfyWorkflowWrapper(prompt)
    wf.set_node_param(SAVE_TITLE, "filename_prefix", "simplified")
    return wf


def test_queue_and_wait_images_gets_the_saved_png(engine, nodegraph_server) -> None:
    url = nodegraph_server(engine, preview_method="none")  # `nodegraph serve`'s default, as ComfyUI's
    images = comfy_api_simplified.ComfyApiWrapper(url).queue_and_wait_images(_workflow(), SAVE_TITLE)
    assert len(images) == 1
    ((name, data),) = images.items()
    assert name.startswith("simplified") and name.endswith(".png")
    assert data == (engine.config.outputs_dir / name).read_bytes()
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (64, 64)


def test_previews_for_every_client_would_confuse_it(engine, nodegraph_server) -> None:
    """The same call with previews sent to all clients returns the live JPEG previews: the test above can fail."""
    url = nodegraph_server(engine, preview_method="auto")
    images = comfy_api_simplified.ComfyApiWrapper(url).queue_and_wait_images(_workflow(), SAVE_TITLE)
    assert images and all(Image.open(io.BytesIO(data)).format == "JPEG" for data in images.values())
