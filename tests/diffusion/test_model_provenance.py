"""Loader nodes report their model files, so every output's manifest carries each model's SHA-256."""

from __future__ import annotations

import hashlib

from nodegraph.engine import Engine


def test_manifest_hashes_checkpoint(tiny_sd):
    engine = Engine(tiny_sd.config)
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_sd.single_file.name}},
          "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 2]}}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    (entry,) = result.manifest["models"].values()
    assert entry["node"] == "1" and entry["name"] == tiny_sd.single_file.name
    assert entry["sha256"] == hashlib.sha256(tiny_sd.single_file.read_bytes()).hexdigest()
    assert result.manifest["nodes"]["1"]["plugin"] == "nodes.loaders"
    # A diffusers folder is hashed over its files.
    wf["1"]["inputs"]["ckpt_name"] = tiny_sd.folder.name
    result = engine.run(engine.prepare(wf)).raise_for_status()
    (entry,) = result.manifest["models"].values()
    assert entry["name"] == tiny_sd.folder.name and len(entry["sha256"]) == 64
