"""Workflows saved by the editor (captured by the browser test) run headless: UI format and PNG, no browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nodegraph.cli import main as cli_main
from nodegraph.ui_format import ui_to_api
from nodegraph.workflow import read_png_chunks

from .helpers import FIXTURES, PLUGINS, WORKFLOWS, load_fixture, strip_meta


def run_cli(*args: str) -> int:
    return cli_main(["run", *args, "--plugin-dir", str(PLUGINS)])


def test_rich_graph_converts_like_the_editor(registry):
    """PrimitiveNode into a converted widget, Reroute, bypassed and muted nodes, a seed with its control value."""
    ui = load_fixture("rich_graph.ui.json")
    modes = {n["type"]: n.get("mode", 0) for n in ui["nodes"]}
    assert modes["ImageInvert"] == 4 and modes["PreviewImage"] == 2 and "Reroute" in modes and "PrimitiveNode" in modes
    assert strip_meta(ui_to_api(ui, registry)) == strip_meta(load_fixture("rich_graph.prompt.json"))


def test_txt2img_saved_by_the_editor_converts_to_the_shipped_workflow(registry):
    path = WORKFLOWS / "txt2img.json"
    if not path.exists():
        pytest.skip("workflows/txt2img.json is missing")
    ui = load_fixture("txt2img.ui.json")
    assert strip_meta(ui_to_api(ui, registry)) == strip_meta(json.loads(path.read_text()))


def test_editor_workflow_runs_headless(tmp_path: Path):
    home = tmp_path / "home"
    assert run_cli(str(FIXTURES / "rich_graph.ui.json"), "--home", str(home)) == 0
    (out,) = (home / "output").rglob("*.png")
    assert out.name == "rich_00001_.png"
    chunks = read_png_chunks(out)
    assert json.loads(chunks["prompt"])["5"]["inputs"]["seed"] == 1234


def test_editor_png_reruns_headless(tmp_path: Path, capsys):
    png = tmp_path / "from editor.png"
    shutil.copyfile(FIXTURES / "rich_graph.png", png)
    home = tmp_path / "home"
    assert run_cli(str(png), "--home", str(home)) == 0
    (out,) = (home / "output").rglob("*.png")
    original, rerun = read_png_chunks(png), read_png_chunks(out)
    assert json.loads(rerun["workflow"]) == json.loads(original["workflow"])  # the editor can open the re-run too
    assert strip_meta(json.loads(rerun["prompt"])) == strip_meta(json.loads(original["prompt"]))
    from PIL import Image

    with Image.open(png) as a, Image.open(out) as b:
        assert a.size == b.size == (24, 96)
        assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
