"""Dataset nodes: a folder under input/ with .txt captions (or one for all), images in the graph, the star concept."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from nodegraph.config import EngineConfig
from nodegraph.testing_graphs import capture_engine, run_captured
from nodegraph.training.classify import classify
from nodegraph.training.concepts import concept_dataset
from nodegraph.training.shapes import SHAPES


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    home = tmp_path_factory.mktemp("ds-home")
    config = EngineConfig(home=home, models_dir=home / "models")
    config.ensure_dirs()
    shutil.copy(tiny_checkpoint.single_file, config.model_dir("checkpoints") / "tiny-sd.safetensors")
    folder = config.input_dir / "shapes"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate([(40, 30), (64, 64), (20, 50)]):
        Image.new("RGB", (w, h), (200, 10 * i, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(["a red circle", "a red square", "a blue sky"][i] + "\n")
    (folder / "notes.md").write_text("not an image")
    return capture_engine(config), config


def _load(**inputs) -> dict:
    return {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
            "ds": {"class_type": "LoadImageDataset", "inputs": {
                "folder": "shapes", "clip": ["ckpt", 1], "caption": "", "width": 48, "height": 32,
                "resize_method": "crop", **inputs}},
            "img": {"class_type": "Capture", "inputs": {"value": ["ds", 0]}},
            "cond": {"class_type": "Capture", "inputs": {"value": ["ds", 1]}}}


def test_folder_with_side_captions_and_one_caption_for_all(setup):
    engine, _ = setup
    result, cap = run_captured(engine, _load())
    result.raise_for_status()
    assert cap["img"].shape == (3, 32, 48, 3) and len(cap["cond"]) == 3
    assert not np.allclose(cap["cond"][0][0].numpy(), cap["cond"][2][0].numpy())
    result, cap = run_captured(engine, _load(caption="a photo", resize_method="stretch"))
    result.raise_for_status()
    assert len(cap["cond"]) == 3 and all(np.allclose(c[0].numpy(), cap["cond"][0][0].numpy()) for c in cap["cond"])


def test_missing_caption_file_and_escaping_folder_are_refused(setup):
    engine, config = setup
    (config.input_dir / "nocap").mkdir()
    Image.new("RGB", (8, 8)).save(config.input_dir / "nocap" / "a.png")
    result, _ = run_captured(engine, _load(folder="nocap"))
    assert result.status == "error" and "has no caption file a.txt" in result.error.exception_message
    result, _ = run_captured(engine, _load(folder="../models"))
    assert result.status == "error"
    result, _ = run_captured(engine, _load(folder="absent"))
    assert result.status == "error" and "put the training images there" in result.error.exception_message


def test_image_dataset_needs_one_caption_per_image_or_one_for_all(setup):
    engine, _ = setup
    wf = {"ckpt": _load()["ckpt"],
          "data": {"class_type": "ShapeConceptDataset", "inputs": {"concept": "star", "count": 2,
                                                                    "prior_images": 1, "seed": 0, "size": 32}},
          "ds": {"class_type": "ImageDataset", "inputs": {"images": ["data", 0], "clip": ["ckpt", 1],
                                                           "captions": "one\ntwo"}},
          "out": {"class_type": "Capture", "inputs": {"value": ["ds", 1]}}}
    result, _ = run_captured(engine, wf)
    assert result.status == "error" and "2 caption lines for 3 images" in result.error.exception_message
    wf["ds"]["inputs"]["captions"] = ["data", 1]
    result, cap = run_captured(engine, wf)
    result.raise_for_status()
    assert len(cap["out"]) == 3


def test_star_concept_dataset_is_seeded_and_classified():
    images, captions, specs = concept_dataset("star", 6, 4, seed=3)
    again, captions2, _ = concept_dataset("star", 6, 4, seed=3)
    assert np.array_equal(images, again) and captions == captions2 and images.shape == (10, 64, 64, 3)
    stars = [i for i, s in enumerate(specs) if s.shape == "star"]
    assert len(stars) == 6 and all(captions[i] == f"a {specs[i].fg} star on a {specs[i].bg} background"
                                   for i in stars)
    for i in stars:  # the extended classifier sees stars; the original vocabulary is unchanged by default
        assert classify(images[i], shape_names=SHAPES + ("star",))["shape"] == "star"
        assert classify(images[i])["shape"] in SHAPES
