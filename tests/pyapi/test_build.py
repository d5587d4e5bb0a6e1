"""Building graphs: handles, checks at build time with errors naming both ends, formats and round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CKPT, ROOT, TXT2IMG, txt2img
from PIL import Image

from nodegraph.pyapi import Graph, GraphBuildError, NodeHandle, Output, Workflow
from nodegraph.pyapi.sweep import plan


@pytest.fixture(scope="module")
def g0(shapes_engine):
    return Graph(shapes_engine)


def test_node_calls_return_typed_handles(shapes_engine) -> None:
    g = Graph(shapes_engine)
    h = txt2img(g)
    assert (h["model"].type, h["clip"].type, h["vae"].type) == ("MODEL", "CLIP", "VAE")
    assert h["clip"].index == 1 and h["clip"].node_id == h["model"].node_id
    assert isinstance(h["sampled"], Output) and h["sampled"].type == "LATENT"
    assert isinstance(h["save"], NodeHandle) and h["save"].class_type == "SaveImage"
    outs = g.CheckpointLoaderSimple(ckpt_name=CKPT)
    assert outs.VAE.index == 2 and outs.node.class_type == "CheckpointLoaderSimple"
    api = g.to_api()
    ks = api[h["sampled"].node_id]
    assert ks["class_type"] == "KSampler" and ks["inputs"]["model"] == [h["model"].node_id, 0]
    assert ks["inputs"]["sampler_name"] == "euler" and ks["inputs"]["denoise"] == 1.0  # catalogue defaults
    assert "CheckpointLoaderSimple" in dir(g)


def test_wiring_a_clip_into_a_model_input_names_both_ends(g0) -> None:
    _, clip, _ = g0.CheckpointLoaderSimple(ckpt_name=CKPT)
    with pytest.raises(GraphBuildError) as err:
        g0.KSampler(model=clip)
    text = str(err.value)
    assert "KSampler.model" in text and "expects MODEL" in text
    assert "CLIP" in text and "CheckpointLoaderSimple output 1" in text


@pytest.mark.parametrize("call, expected", [
    (lambda g: g.KSamplr(), "did you mean KSampler"),
    (lambda g: g.EmptyLatentImage(widht=64), "has no input 'widht'"),
    (lambda g: g.EmptyLatentImage(width=8), "below the minimum 16"),
    (lambda g: g.EmptyLatentImage(width="big"), "takes an integer"),
    (lambda g: g.EmptyLatentImage(width=True), "takes an integer"),
    (lambda g: g.KSampler(sampler_name="eulr"), "'eulr' is not among the options"),
    (lambda g: g.CheckpointLoaderSimple(ckpt_name="missing.safetensors"), "choose one of: nodegraph-shapes-v1"),
    (lambda g: g.CLIPTextEncode(text=3.5), "takes a string"),
    (lambda g: g.VAEDecode(samples="latent"), "takes a link to a LATENT output"),
    (lambda g: g.VAEDecode(), "VAEDecode.samples (node 1) is required"),
])
def test_bad_calls_fail_when_the_graph_is_built(shapes_engine, call, expected) -> None:
    g = Graph(shapes_engine)
    with pytest.raises(GraphBuildError, match=None) as err:
        call(g)
    assert expected in str(err.value)
    assert len(g) == 0  # nothing half-added


def test_handles_of_another_graph_and_tuple_misuse_are_refused(shapes_engine) -> None:
    a, b = Graph(shapes_engine), Graph(shapes_engine)
    outs = a.CheckpointLoaderSimple(ckpt_name=CKPT)
    with pytest.raises(GraphBuildError, match="belongs to another Graph"):
        b.CLIPTextEncode(clip=outs[1], text="x")
    with pytest.raises(GraphBuildError, match="got all 3 outputs"):
        a.CLIPTextEncode(clip=outs, text="x")


def test_api_round_trip_and_save(shapes_engine, tmp_path) -> None:
    g = Graph(shapes_engine)
    h = txt2img(g, seed=7)
    api = g.to_api()
    back = Graph.from_api(api, shapes_engine)
    assert back.to_api() == api
    assert back[h["sampled"].node_id].outputs[0].type == "LATENT"
    back.set(h["sampled"].node_id, "seed", 8)
    ks = h["sampled"].node_id
    assert back.to_api()[ks]["inputs"]["seed"] == 8 and api[ks]["inputs"]["seed"] == 7
    with pytest.raises(GraphBuildError, match="expects MODEL"):
        back.set(ks, "model", back[h["model"].node_id].outputs[1])
    path = g.save(tmp_path / "x.json")
    assert json.loads(path.read_text()) == api
    assert Workflow.load(path, shapes_engine).api == api
    bad = dict(api)
    bad[h["sampled"].node_id] = {"class_type": "KSampler", "inputs": {**api[h["sampled"].node_id]["inputs"],
                                                                      "model": [h["model"].node_id, 1]}}
    with pytest.raises(GraphBuildError, match="expects MODEL but got CLIP"):
        Graph.from_api(bad, shapes_engine)


def test_workflow_loads_api_ui_and_png_files(shapes_engine, tmp_path) -> None:
    from nodegraph.ui_export import api_to_ui

    api = json.loads(TXT2IMG.read_text())
    ui_path = tmp_path / "ui.json"
    ui_path.write_text(json.dumps(api_to_ui(api, shapes_engine.registry)))
    png_path = tmp_path / "wf.png"
    info = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    info.add_text("prompt", json.dumps(api))
    Image.new("RGB", (8, 8)).save(png_path, pnginfo=info)
    for path in (TXT2IMG, ui_path, png_path):
        wf = Workflow.load(path, shapes_engine)
        assert wf.api["3"]["class_type"] == "KSampler" and wf.api["3"]["inputs"]["model"] == ["4", 0], path
        assert wf.api["6"]["inputs"]["text"] == api["6"]["inputs"]["text"]


def test_set_uses_the_cli_semantics(shapes_engine) -> None:
    wf = Workflow.load(TXT2IMG, shapes_engine)
    out = wf.with_set({"3.seed": 5, "6.text": "a green square", "3.cfg": 2.5})
    assert out["3"]["inputs"]["seed"] == 5 and out["6"]["inputs"]["text"] == "a green square"
    assert out["3"]["inputs"]["cfg"] == 2.5 and wf.api["3"]["inputs"]["seed"] == 42  # the workflow is unchanged
    assert wf.with_set(["3.steps=3"])["3"]["inputs"]["steps"] == 3  # the --set strings too
    with pytest.raises(ValueError, match="the workflow has no node '99'"):
        wf.with_set({"99.seed": 1})
    with pytest.raises(ValueError, match="expected ID.INPUT=VALUE"):
        wf.with_set({"seed": 1})


def test_sweep_plans() -> None:
    assert plan({"3.seed": range(2), "3.cfg": [3, 5]}) == [
        {"3.seed": 0, "3.cfg": 3}, {"3.seed": 0, "3.cfg": 5}, {"3.seed": 1, "3.cfg": 3}, {"3.seed": 1, "3.cfg": 5}]
    assert plan({"3.seed": [1, 2], "3.cfg": [3, 5]}, "zip") == [{"3.seed": 1, "3.cfg": 3}, {"3.seed": 2, "3.cfg": 5}]
    with pytest.raises(ValueError, match="axes of one length"):
        plan({"3.seed": [1, 2], "3.cfg": [3]}, "zip")
    with pytest.raises(ValueError, match="use 'product' or 'zip'"):
        plan({"3.seed": [1]}, "grid")


def test_import_nodegraph_stays_cheap() -> None:
    code = ("import sys, nodegraph; assert 'nodegraph.pyapi' not in sys.modules; "
            "from nodegraph import Graph, Workflow; "
            "assert 'aiohttp' not in sys.modules and 'torch' not in sys.modules; "
            "from nodegraph import Client; assert 'aiohttp' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
