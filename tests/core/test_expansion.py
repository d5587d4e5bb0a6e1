"""Node expansion: a node returns a subgraph that the executor splices in, runs and caches by content."""

from __future__ import annotations

import pytest

from nodegraph import Int, Link, Node, NodeOutput, Output
from nodegraph.registry import Registry
from nodegraph.testing import build_engine, build_registry

RAN: list[str] = []


class Inc(Node):
    """x + 1, recording each run."""

    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x):
        RAN.append(ctx.node_id)
        return (x + 1,)


class Start(Node):
    """An integer."""

    INPUTS = {"value": Int(0)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, value):
        return (value,)


class Repeat(Node):
    """Adds ``n`` by expanding into a chain of ``n`` Inc nodes (the first takes the value computed here)."""

    INPUTS = {"x": Link("INT"), "n": Int(1, min=1, max=100)}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x, n):
        RAN.append(ctx.node_id)
        graph = {"0": {"class_type": "Inc", "inputs": {"x": x}}}
        for i in range(1, n):
            graph[str(i)] = {"class_type": "Inc", "inputs": {"x": [str(i - 1), 0]}}
        return NodeOutput(([str(n - 1), 0],), expand=graph)


class LinkOut(Node):
    """Expands ComfyUI-style (a dict) into an Inc linked to a node of the prompt, by reading its own input link."""

    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x):
        src, idx = ctx.prompt[ctx.node_id]["inputs"]["x"]
        return {"result": (["a", 0],), "expand": {"a": {"class_type": "Inc", "inputs": {"x": [src, idx]}}}}


class Broken(Node):
    """Expands into a node type that does not exist."""

    INPUTS = {"x": Link("INT")}
    OUTPUTS = (Output("INT"),)

    def execute(self, ctx, x):
        return NodeOutput((["a", 0],), expand={"a": {"class_type": "NoSuchNode", "inputs": {}}})


class Show(Node):
    """An output node."""

    OUTPUT_NODE = True
    INPUTS = {"value": Link("INT")}

    def execute(self, ctx, value):
        return NodeOutput((), {"value": [value]})


@pytest.fixture
def engine(nodegraph_config):
    RAN.clear()
    registry = build_registry(Inc, Start, Repeat, LinkOut, Broken, Show, builtins=())
    eng = build_engine(nodegraph_config, registry)
    eng.services.put(Registry, registry)  # what expansions resolve class types with
    return eng


def graph(n: int, start: int = 10, node: str = "Repeat") -> dict:
    inputs = {"x": ["s", 0], "n": n} if node == "Repeat" else {"x": ["s", 0]}
    return {"s": {"class_type": "Start", "inputs": {"value": start}},
            "r": {"class_type": node, "inputs": inputs},
            "out": {"class_type": "Show", "inputs": {"value": ["r", 0]}}}


def test_expands_into_a_chain_and_returns_its_result(engine):
    result = engine.run(engine.prepare(graph(5))).raise_for_status()
    assert result.outputs["out"] == {"value": [15]}
    assert RAN == ["r", "r.0", "r.1", "r.2", "r.3", "r.4"]
    assert result.executed == ["s", "r.0", "r.1", "r.2", "r.3", "r.4", "r", "out"]


def test_rerun_hits_the_cache(engine):
    engine.run(engine.prepare(graph(5))).raise_for_status()
    RAN.clear()
    again = engine.run(engine.prepare(graph(5))).raise_for_status()
    assert again.outputs["out"] == {"value": [15]} and RAN == [] and again.executed == []


def test_expanded_nodes_are_cached_by_content(engine):
    engine.run(engine.prepare(graph(3))).raise_for_status()
    RAN.clear()
    # the same graph under other node ids is the same content: nothing runs again
    renamed = {"S": {"class_type": "Start", "inputs": {"value": 10}},
               "R": {"class_type": "Repeat", "inputs": {"x": ["S", 0], "n": 3}},
               "O": {"class_type": "Show", "inputs": {"value": ["R", 0]}}}
    res = engine.run(engine.prepare(renamed)).raise_for_status()
    assert res.outputs["O"] == {"value": [13]} and RAN == []
    # a new start value: the expanding node and its chain run again, under new keys
    res = engine.run(engine.prepare(graph(3, start=20))).raise_for_status()
    assert res.outputs["out"] == {"value": [23]} and RAN == ["r", "r.0", "r.1", "r.2"]
    # a longer chain shares nothing it should not: every step runs with the right input
    RAN.clear()
    res = engine.run(engine.prepare(graph(4, start=20))).raise_for_status()
    assert res.outputs["out"] == {"value": [24]} and RAN == ["r", "r.0", "r.1", "r.2", "r.3"]


def test_expansion_ui_and_result_values_pass_through(engine):
    class Literal(Node):
        """Expands into one Inc but returns a plain value next to the reference."""

        INPUTS = {"x": Link("INT")}
        OUTPUTS = (Output("INT"), Output("INT"))

        def execute(self, ctx, x):
            return NodeOutput((["a", 0], 99), expand={"a": {"class_type": "Inc", "inputs": {"x": x}}})

    registry = build_registry(Inc, Start, Literal, Show, builtins=())
    eng = build_engine(engine.config, registry)
    eng.services.put(Registry, registry)
    wf = {"s": {"class_type": "Start", "inputs": {"value": 1}},
          "l": {"class_type": "Literal", "inputs": {"x": ["s", 0]}},
          "o1": {"class_type": "Show", "inputs": {"value": ["l", 0]}},
          "o2": {"class_type": "Show", "inputs": {"value": ["l", 1]}}}
    res = eng.run(eng.prepare(wf)).raise_for_status()
    assert res.outputs == {"o1": {"value": [2]}, "o2": {"value": [99]}}


def test_comfyui_dict_form_and_links_to_prompt_nodes(engine):
    result = engine.run(engine.prepare(graph(0, start=3, node="LinkOut"))).raise_for_status()
    assert result.outputs["out"] == {"value": [4]}
    assert "r.a" in result.executed


def test_bad_expansion_fails_the_node_with_a_clear_error(engine):
    result = engine.run(engine.prepare(graph(0, node="Broken")))
    assert result.status == "error" and result.error.node_id == "r"
    assert "NoSuchNode" in result.error.exception_message and "not installed" in result.error.exception_message
