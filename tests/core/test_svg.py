"""SaveSVGNode (nodes/image_io.py) on a real server: a test node makes a tiny SVG batch, SaveSVGNode writes
``svg/ComfyUI_00001_.svg`` … into the output folder with the run's metadata, /history lists them under ``images``
and /view serves them inline as image/svg+xml under a sandboxing Content-Security-Policy, so no script in them runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from nodegraph.api import Link, Node, Output, String
from nodes.image_io import SvgDocuments, svg_texts, with_svg_metadata

from .http_calls import call as _call

TINY = ('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4" fill="red"/>'
        '<script>alert(1)</script></svg>')


class MakeSVG(Node):
    """Test node: two tiny SVG documents, the second one's fill from ``color``."""

    CATEGORY = "testing"
    INPUTS = {"color": String("blue")}
    OUTPUTS = (Output("SVG"),)

    def execute(self, ctx, color: str):
        return (SvgDocuments((TINY, TINY.replace("red", color))),)


class TakesSVG(Node):
    """Test node: counts an SVG (checks the link type validates)."""

    CATEGORY = "testing"
    OUTPUT_NODE = True
    INPUTS = {"svg": Link("SVG")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, svg: Any):
        return (len(svg_texts(svg)),)


@pytest.fixture()
def base(config, nodegraph_server) -> str:
    from nodegraph.testing import build_engine, build_registry

    engine = build_engine(config, build_registry(MakeSVG, TakesSVG, builtins=("nodes.image_io",)))
    return nodegraph_server(engine)


def _run(base: str, prompt: dict[str, Any]) -> dict[str, Any]:
    status, body, _ = _call(base, "POST", "/prompt", {"prompt": prompt, "extra_data": {"extra_pnginfo": {
        "workflow": {"nodes": []}}}})
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, history, _ = _call(base, "GET", f"/history/{pid}")
        if status == 200 and pid in history and history[pid]["status"].get("completed") is not None:
            return history[pid]
        time.sleep(0.1)
    raise AssertionError(f"prompt {pid} did not finish")


def test_saves_svgs_and_serves_them_safely(base: str, config) -> None:
    prompt = {"mk": {"class_type": "MakeSVG", "inputs": {"color": "lime"}},
              "save": {"class_type": "SaveSVGNode", "inputs": {"svg": ["mk", 0], "filename_prefix": "svg/ComfyUI"}}}
    history = _run(base, prompt)
    assert history["status"]["status_str"] == "success", history["status"]
    entries = history["outputs"]["save"]["images"]
    assert [e["filename"] for e in entries] == ["ComfyUI_00001_.svg", "ComfyUI_00002_.svg"]
    assert all(e["subfolder"] == "svg" and e["type"] == "output" for e in entries)
    for entry, fill in zip(entries, ("red", "lime"), strict=True):
        query = urllib.parse.urlencode(entry)
        status, data, headers = _call(base, "GET", f"/view?{query}")
        assert status == 200
        text = data.decode("utf-8")
        assert f'fill="{fill}"' in text and "<metadata><![CDATA[" in text and '"workflow"' in text
        ctype = headers.get_content_type()
        disposition = headers.get("Content-Disposition", "")
        csp = headers.get("Content-Security-Policy", "")
        # shown inline (the editor displays it), only under a policy that stops its scripts and fetches
        assert disposition.startswith("inline") and ctype == "image/svg+xml"
        assert "sandbox" in csp and "default-src 'none'" in csp and "script-src" not in csp
        assert headers.get("X-Content-Type-Options") == "nosniff"
    # another run counts on (an identical prompt would be answered from the cache)
    prompt["mk"]["inputs"]["color"] = "navy"
    history = _run(base, prompt)
    assert history["outputs"]["save"]["images"][0]["filename"] == "ComfyUI_00003_.svg"


def test_svg_link_type_validates(base: str) -> None:
    ok = _run(base, {"mk": {"class_type": "MakeSVG", "inputs": {"color": "red"}},
                     "n": {"class_type": "TakesSVG", "inputs": {"svg": ["mk", 0]}}})
    assert ok["status"]["status_str"] == "success"
    status, body, _ = _call(base, "POST", "/prompt", {"prompt": {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
        "save": {"class_type": "SaveSVGNode", "inputs": {"svg": ["img", 0], "filename_prefix": "x"}}}})
    assert status == 400 and "SVG" in json.dumps(body)


def test_metadata_and_inputs() -> None:
    nested = '<svg a="1"><svg b="2"></svg></svg>'
    out = with_svg_metadata(nested, {"prompt": {"x": "]]>"}})
    assert out.count("<metadata>") == 1 and out.index("<metadata>") < out.index('<svg b="2">')
    assert "]]]]><![CDATA[>" in out  # a CDATA terminator inside the JSON is split, not closing the section early
    assert with_svg_metadata(nested, {}) == nested
    assert svg_texts(TINY.encode()) == [TINY] and svg_texts([TINY, TINY]) == [TINY, TINY]
    with pytest.raises(ValueError, match="SVG"):
        svg_texts("not svg")
