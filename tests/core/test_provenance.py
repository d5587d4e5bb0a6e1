"""Provenance: manifests in PNGs and runs, version stamping, strict re-runs, inspect, determinism across processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from nodegraph.provenance import HashCache, compare_with_installation, inspect_image


def board_workflow(model: Path) -> dict:
    return {"1": {"class_type": "ExampleCheckerboard", "inputs": {"size": 16, "squares": 2}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "prov"}},
            "3": {"class_type": "ReadModel", "inputs": {"path": str(model)}},
            "4": {"class_type": "Sink", "inputs": {"value": ["3", 0]}}}


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    plugin_dir = Path(__file__).parent
    return subprocess.run([sys.executable, "-m", "nodegraph.cli", *args, "--home", str(tmp_path / "home"),
                           "--plugin-dir", str(plugin_dir)], capture_output=True, text=True, cwd=tmp_path)


def test_manifest_in_png_and_strict_rerun(tmp_path):
    model = tmp_path / "weights.safetensors"
    model.write_bytes(b"\x01" * 1000)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(board_workflow(model)))
    res = run_cli(tmp_path, "run", str(wf), "--output-dir", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    png = tmp_path / "a" / "prov_00001_.png"
    with Image.open(png) as img:
        manifest = json.loads(img.text["nodegraph"])
        prompt = json.loads(img.text["prompt"])
    assert manifest["nodes"]["1"] == {"class_type": "ExampleCheckerboard", "version": "1.0.0", "plugin": "example",
                                      "plugin_version": "1.2.0"}
    assert manifest["models"][str(model)]["sha256"] == HashCache().sha256(model)
    assert manifest["runtime"]["torch"]
    assert prompt["1"]["_meta"]["version"] == "1.0.0"  # saved workflows record node versions

    # Same installation: no differences, strict runs and gives bit-identical bytes (a second process).
    res = run_cli(tmp_path, "run", str(png), "--strict", "--output-dir", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert "differs" not in res.stderr
    again = tmp_path / "b" / "prov_00001_.png"
    assert again.read_bytes() == png.read_bytes()

    # A different model file: reported, and --strict refuses.
    model.write_bytes(b"\x02" * 1000)
    res = run_cli(tmp_path, "run", str(png), "--strict", "--output-dir", str(tmp_path / "c"))
    assert res.returncode == 2
    assert "model weights.safetensors" in res.stderr and "another SHA-256" in res.stderr
    res = run_cli(tmp_path, "run", str(png), "--output-dir", str(tmp_path / "c"))
    assert res.returncode == 0 and "differs: model weights.safetensors" in res.stderr


def test_compare_reports_versions_and_missing_plugins(engine):
    manifest = {"nodegraph": "0.0.1", "nodes": {
        "1": {"class_type": "Const", "version": "0.9.0", "plugin": "testnodes", "plugin_version": None},
        "2": {"class_type": "GoneNode", "version": "1.0.0", "plugin": "gone-plugin", "plugin_version": "3.1.0"}},
        "models": {"/nonexistent/model.safetensors": {"name": "model.safetensors", "sha256": "00"}},
        "runtime": {"torch": "0.0.1"}}
    diffs = compare_with_installation(manifest, engine)
    text = "\n".join(diffs)
    assert "nodegraph 0.0.1 made the image" in text
    assert "node 1: Const 0.9.0 made the image; installed is 1.0.0" in text
    assert "node 2: GoneNode (plugin gone-plugin 3.1.0) is not installed" in text
    assert "model model.safetensors: /nonexistent/model.safetensors is missing here" in text
    assert "torch 0.0.1 made the image" in text
    assert compare_with_installation(None, engine)[0].startswith("the image carries no nodegraph manifest")


def test_hash_cache_remembers_by_path_size_mtime(tmp_path):
    f = tmp_path / "m.bin"
    f.write_bytes(b"abc")
    cache = HashCache(tmp_path / "h.db")
    first = cache.sha256(f)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert HashCache(tmp_path / "h.db").sha256(f) == first  # from the database
    f.write_bytes(b"abcd")
    assert cache.sha256(f) != first


def test_inspect(tmp_path, engine, capsys):
    from nodegraph.cli import main

    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 255}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "i"}}}
    result = engine.run(engine.prepare(wf), extra_data={"extra_pnginfo": {"workflow": {"nodes": [], "links": []}}})
    png = engine.config.outputs_dir / result.outputs["2"]["images"][0]["filename"]
    text = inspect_image(png)
    assert "1 EmptyImage 1.0.0" in text and "width = 8" in text and "nodegraph 0.1.0" in text
    assert "editor workflow: present" in text
    assert main(["inspect", str(png)]) == 0 and "EmptyImage" in capsys.readouterr().out
