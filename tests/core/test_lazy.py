"""Lazy inputs: a node says which lazy inputs it needs; branches it does not need never run."""

from __future__ import annotations

import pytest

from nodegraph import Boolean, Int, Link, Node, NodeOutput, Output
from nodegraph.events import NodesCached, NodeStarted
from nodegraph.testing import build_engine, build_registry

RAN: list[str] = []


class Expensive(Node):
    """Records that it ran, then returns its value (a stand-in for a sampler)."""

    INPUTS = {"value": Int(0, min=-1000, max=1000), "tag": Int(0, optional=True)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value, tag=0):
        RAN.append(ctx.node_id)
        return (value,)


class Flag(Node):
    """A BOOLEAN from a node, so the switch's choice arrives over a link."""

    INPUTS = {"value": Boolean(False)}
    OUTPUTS = (Output("BOOLEAN"),)

    def execute(self, ctx, value):
        return (value,)


class Show(Node):
    """An output node."""

    OUTPUT_NODE = True
    INPUTS = {"value": Link("*")}

    def execute(self, ctx, value):
        return NodeOutput((), {"value": [value]})


class FirstPositive(Node):
    """Uses the default check_lazy_status: every lazy input is evaluated."""

    INPUTS = {"a": Link("INT"), "b": Link("INT", lazy=True)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, a, b):
        return (a if a > 0 else b,)


@pytest.fixture
def engine(nodegraph_config):
    RAN.clear()
    return build_engine(nodegraph_config, build_registry(Expensive, Flag, Show, FirstPositive,
                                                         builtins=("nodes.utils", "nodes.logic")))


def graph(switch, false_value: int = 1, true_value: int = 2) -> dict:
    return {"f": {"class_type": "Expensive", "inputs": {"value": false_value}},
            "t": {"class_type": "Expensive", "inputs": {"value": true_value}},
            "sw": {"class_type": "ComfySwitchNode", "inputs": {"switch": switch, "on_false": ["f", 0],
                                                               "on_true": ["t", 0]}},
            "out": {"class_type": "Show", "inputs": {"value": ["sw", 0]}}}


@pytest.mark.parametrize("switch, chosen, skipped, value", [(True, "t", "f", 2), (False, "f", "t", 1)])
def test_branch_not_chosen_never_runs(engine, switch, chosen, skipped, value):
    result = engine.run(engine.prepare(graph(switch)), record_events=True).raise_for_status()
    assert result.outputs["out"] == {"value": [value]}
    assert RAN == [chosen]
    assert skipped not in result.executed and chosen in result.executed
    started = [e.node_id for e in result.events if isinstance(e, NodeStarted)]
    assert skipped not in started
    reported = [n for e in result.events if isinstance(e, NodesCached) for n in e.nodes]
    assert skipped not in reported and chosen not in reported


def test_switch_driven_by_a_link(engine):
    wf = graph(["flag", 0])
    wf["flag"] = {"class_type": "Flag", "inputs": {"value": True}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["out"] == {"value": [2]} and RAN == ["t"]


def test_flipping_the_switch_runs_the_other_branch_once_and_caches(engine):
    engine.run(engine.prepare(graph(True))).raise_for_status()
    flipped = engine.run(engine.prepare(graph(False))).raise_for_status()
    assert flipped.outputs["out"] == {"value": [1]} and RAN == ["t", "f"]
    back = engine.run(engine.prepare(graph(True))).raise_for_status()
    assert back.outputs["out"] == {"value": [2]} and RAN == ["t", "f"]  # both branches now cached


def test_nested_switches_run_only_the_chosen_leaf(engine):
    wf = graph(False, 1, 2)
    wf["x"] = {"class_type": "Expensive", "inputs": {"value": 3}}
    wf["outer"] = {"class_type": "ComfySwitchNode", "inputs": {"switch": True, "on_false": ["x", 0],
                                                               "on_true": ["sw", 0]}}
    wf["out"]["inputs"]["value"] = ["outer", 0]
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["out"] == {"value": [1]} and RAN == ["f"]


def test_branch_shared_with_an_eager_consumer_runs_once(engine):
    wf = graph(True)
    wf["also"] = {"class_type": "Show", "inputs": {"value": ["f", 0]}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["out"] == {"value": [2]} and result.outputs["also"] == {"value": [1]}
    assert sorted(RAN) == ["f", "t"]


def test_switch_with_one_branch_wired_passes_it_on(engine):
    wf = graph(True)
    del wf["sw"]["inputs"]["on_true"]
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["out"] == {"value": [1]} and RAN == ["f"]


def test_default_lazy_status_evaluates_every_lazy_input(engine):
    wf = {"a": {"class_type": "Expensive", "inputs": {"value": 0}},
          "b": {"class_type": "Expensive", "inputs": {"value": 7, "tag": 1}},
          "p": {"class_type": "FirstPositive", "inputs": {"a": ["a", 0], "b": ["b", 0]}},
          "out": {"class_type": "Show", "inputs": {"value": ["p", 0]}}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs["out"] == {"value": [7]} and sorted(RAN) == ["a", "b"]


def test_object_info_marks_lazy_inputs(engine):
    entry = engine.registry.get("ComfySwitchNode").catalogue_entry(engine.config)
    assert entry["input"]["optional"]["on_true"] == ["*", {"tooltip": "passed on when switch is true", "lazy": True}]
    assert entry["category"] == "logic" and entry["display_name"] == "Switch"
