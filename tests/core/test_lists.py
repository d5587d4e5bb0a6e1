"""ComfyUI's list semantics in the executor: per-element runs, broadcast, INPUT_IS_LIST, per-element caching."""

from __future__ import annotations

import pytest
import torch

from nodegraph import Int, Link, Node, NodeOutput, Output, String
from nodegraph.events import NodeProgress
from nodegraph.testing import build_engine, build_registry

CALLS: list[tuple] = []


class PromptList(Node):
    """Emits its lines as a list of strings."""

    INPUTS = {"text": String("")}
    OUTPUTS = (Output("STRING", is_list=True),)

    def execute(self, ctx, text):
        return ([line for line in text.split("\n") if line],)


class SeedRange(Node):
    """Emits ``count`` seeds from ``start`` as a list."""

    INPUTS = {"start": Int(0), "count": Int(1, min=0, max=100)}
    OUTPUTS = (Output("INT", is_list=True),)

    def execute(self, ctx, start, count):
        return (list(range(start, start + count)),)


class Render(Node):
    """A stand-in for sampling: one 'image' description per (prompt, seed), recording each call."""

    INPUTS = {"prompt": Link("STRING"), "seed": Link("INT")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, prompt, seed):
        CALLS.append(("Render", prompt, seed))
        return (f"{prompt}@{seed}",)


class Collect(Node):
    """An output node that takes whole lists and shows them."""

    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    INPUTS = {"value": Link("*")}

    def execute(self, ctx, value):
        CALLS.append(("Collect", tuple(value)))
        return NodeOutput((), {"value": list(value)})


class Show(Node):
    """An output node that runs per element."""

    OUTPUT_NODE = True
    INPUTS = {"value": Link("*")}

    def execute(self, ctx, value):
        return NodeOutput((), {"value": [value]})


class MakeImages(Node):
    """A batch of ``count`` images of size 8×8 whose pixels hold their index."""

    INPUTS = {"count": Int(1, min=1, max=64)}
    OUTPUTS = (Output("IMAGE"),)

    def execute(self, ctx, count):
        return (torch.arange(count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 8, 8, 3).clone(),)


class BatchSizes(Node):
    """An output node showing the batch size and first pixel of each image batch it receives."""

    OUTPUT_NODE = True
    INPUTS = {"image": Link("IMAGE")}

    def execute(self, ctx, image):
        return NodeOutput((), {"batches": [[image.shape[0], [float(v) for v in image[:, 0, 0, 0]]]]})


@pytest.fixture
def engine(nodegraph_config):
    CALLS.clear()
    registry = build_registry(PromptList, SeedRange, Render, Collect, Show, MakeImages, BatchSizes,
                              builtins=("nodes.utils", "nodes.batches"))
    return build_engine(nodegraph_config, registry)


def sweep(prompts: str, start: int = 1, count: int = 3) -> dict:
    return {"p": {"class_type": "PromptList", "inputs": {"text": prompts}},
            "s": {"class_type": "SeedRange", "inputs": {"start": start, "count": count}},
            "r": {"class_type": "Render", "inputs": {"prompt": ["p", 0], "seed": ["s", 0]}},
            "c": {"class_type": "Collect", "inputs": {"value": ["r", 0]}}}


def test_list_output_runs_downstream_once_per_element_with_broadcast(engine):
    result = engine.run(engine.prepare(sweep("a cat\na dog", 1, 3))).raise_for_status()
    # longest list wins (3 seeds), the shorter prompt list repeats its last element
    assert result.outputs["c"] == {"value": ["a cat@1", "a dog@2", "a dog@3"]}
    assert [c for c in CALLS if c[0] == "Render"] == [("Render", "a cat", 1), ("Render", "a dog", 2),
                                                      ("Render", "a dog", 3)]
    assert [c for c in CALLS if c[0] == "Collect"] == [("Collect", ("a cat@1", "a dog@2", "a dog@3"))]


def test_scalar_input_broadcasts_over_a_list(engine):
    wf = sweep("one prompt", 5, 2)
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["c"] == {"value": ["one prompt@5", "one prompt@6"]}


def test_per_element_node_output_ui_is_merged(engine):
    wf = sweep("x", 1, 3)
    wf["c"] = {"class_type": "Show", "inputs": {"value": ["r", 0]}}
    result = engine.run(engine.prepare(wf), record_events=True).raise_for_status()
    assert result.outputs["c"] == {"value": ["x@1", "x@2", "x@3"]}
    progress = [(e.value, e.max) for e in result.events if isinstance(e, NodeProgress) and e.node_id == "r"]
    assert progress == [(1, 3), (2, 3), (3, 3)]  # progress counts elements


def test_elements_are_cached_one_by_one(engine):
    engine.run(engine.prepare(sweep("x", 1, 3))).raise_for_status()
    CALLS.clear()
    again = engine.run(engine.prepare(sweep("x", 1, 3))).raise_for_status()
    assert again.executed == [] and again.outputs["c"] == {"value": ["x@1", "x@2", "x@3"]}
    # one more seed: only the new element renders, the three earlier ones come from the cache
    more = engine.run(engine.prepare(sweep("x", 1, 4))).raise_for_status()
    assert more.outputs["c"] == {"value": ["x@1", "x@2", "x@3", "x@4"]}
    assert [c for c in CALLS if c[0] == "Render"] == [("Render", "x", 4)]


def test_same_elements_in_other_positions_keep_correct_results(engine):
    engine.run(engine.prepare(sweep("a\nb", 1, 2))).raise_for_status()
    swapped = engine.run(engine.prepare(sweep("b\na", 1, 2))).raise_for_status()
    assert swapped.outputs["c"] == {"value": ["b@1", "a@2"]}


def test_empty_list_runs_nothing_downstream(engine):
    result = engine.run(engine.prepare(sweep("x", 1, 0))).raise_for_status()
    assert result.outputs["c"] == {"value": []}
    assert not [c for c in CALLS if c[0] == "Render"]


def test_list_output_must_be_a_list(engine):
    class NotAList(Node):
        """Declares a list output but returns a number."""

        INPUTS = {}
        OUTPUTS = (Output("INT", is_list=True),)

        def execute(self, ctx):
            return (3,)

    from nodegraph.testing import build_registry as reg
    eng = build_engine(engine.config, reg(NotAList, Show, builtins=()))
    result = eng.run(eng.prepare({"n": {"class_type": "NotAList", "inputs": {}},
                                  "s": {"class_type": "Show", "inputs": {"value": ["n", 0]}}}))
    assert result.status == "error" and "is_list=True" in result.error.exception_message


def test_object_info_declares_list_semantics(engine):
    entry = engine.registry.get("RebatchImages").catalogue_entry(engine.config)
    assert entry["output_is_list"] == [True]


def test_image_batch_split_into_lists_and_back(engine):
    wf = {"m": {"class_type": "MakeImages", "inputs": {"count": 5}},
          "split": {"class_type": "RebatchImages", "inputs": {"images": ["m", 0], "batch_size": 2}},
          "each": {"class_type": "BatchSizes", "inputs": {"image": ["split", 0]}},
          "join": {"class_type": "RebatchImages", "inputs": {"images": ["split", 0], "batch_size": 8}},
          "whole": {"class_type": "BatchSizes", "inputs": {"image": ["join", 0]}}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["each"] == {"batches": [[2, [0.0, 1.0]], [2, [2.0, 3.0]], [1, [4.0]]]}
    assert result.outputs["whole"] == {"batches": [[5, [0.0, 1.0, 2.0, 3.0, 4.0]]]}


def test_image_from_batch_and_image_batch(engine):
    wf = {"m": {"class_type": "MakeImages", "inputs": {"count": 4}},
          "pick": {"class_type": "ImageFromBatch", "inputs": {"image": ["m", 0], "batch_index": 1, "length": 2}},
          "tail": {"class_type": "ImageFromBatch", "inputs": {"image": ["m", 0], "batch_index": 9, "length": 5}},
          "both": {"class_type": "ImageBatch", "inputs": {"image1": ["pick", 0], "image2": ["tail", 0]}},
          "show": {"class_type": "BatchSizes", "inputs": {"image": ["both", 0]}}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["show"] == {"batches": [[3, [1.0, 2.0, 3.0]]]}


def test_latent_batch_nodes_keep_noise_draws():
    from nodes.batches import LatentFromBatch, RepeatLatentBatch

    latent = {"samples": torch.arange(3.0).view(3, 1, 1, 1).expand(3, 4, 2, 2).clone()}
    (two,) = LatentFromBatch().execute(None, latent, batch_index=1, length=5)
    assert two["samples"].shape[0] == 2 and two["batch_index"] == [1, 2]
    (rep,) = RepeatLatentBatch().execute(None, two, amount=3)
    assert rep["samples"].shape[0] == 6
    assert rep["batch_index"] == [1, 2, 3, 4, 5, 6]  # each copy draws its own noise
    assert torch.equal(rep["samples"][2], two["samples"][0])


def test_seed_sweep_workflow_runs_per_seed_and_skips_the_branch_not_chosen(tmp_path):
    """workflows/seed_sweep_switch.json on the embedded model: the picked element is seed 43's image."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine

    wf = json.loads((Path(__file__).parents[2] / "workflows" / "seed_sweep_switch.json").read_text())
    engine = Engine(EngineConfig(home=tmp_path / "home", output_dir=tmp_path / "out"))
    result = engine.run(engine.prepare(wf), record_events=True).raise_for_status()
    assert "14" not in result.executed and "12" in result.executed  # the upscale branch never ran
    elements = [e.value for e in result.events if isinstance(e, NodeProgress) and e.node_id == "3" and e.max == 3]
    assert elements == [1, 2, 3]  # one sampler run per seed
    single = {k: v for k, v in wf.items() if k not in ("10", "11", "13", "14")}
    single["3"] = dict(single["3"], inputs=dict(single["3"]["inputs"], seed=43))
    single["12"] = dict(single["12"], inputs={"switch": False, "on_false": ["8", 0]})
    alone = engine.run(engine.prepare(single)).raise_for_status()

    def pixels(res):
        (img,) = [i for ui in res.outputs.values() for i in ui["images"]]
        return np.asarray(Image.open(tmp_path / "out" / img["subfolder"] / img["filename"]))

    assert pixels(result).shape == (64, 64, 3)
    assert np.array_equal(pixels(result), pixels(alone))
