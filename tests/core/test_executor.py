"""The caching executor: what runs, what is cached, events, interrupts and failures."""

from __future__ import annotations

import threading

from nodegraph.context import InterruptFlag
from nodegraph.events import (NodeFinished, NodeProgress, NodesCached, NodeStarted, RunFailed, RunFinished,
                              RunInterrupted, RunStarted)


def chain(n: int, start: int = 0) -> dict:
    wf = {"c": {"class_type": "Const", "inputs": {"value": start}}}
    prev = "c"
    for i in range(n):
        wf[f"a{i}"] = {"class_type": "AddOne", "inputs": {"x": [prev, 0]}}
        prev = f"a{i}"
    wf["out"] = {"class_type": "Sink", "inputs": {"value": [prev, 0]}}
    return wf


def test_runs_outputs_and_ancestors_in_order(engine):
    wf = chain(3)
    wf["dangling"] = {"class_type": "AddOne", "inputs": {"x": ["c", 0]}}
    result = engine.run(engine.prepare(wf)).raise_for_status()
    assert result.outputs == {"out": {"value": [3]}}
    assert result.executed == ["c", "a0", "a1", "a2", "out"]  # the dangling node is not needed


def test_rerun_without_change_executes_nothing(engine):
    engine.run(engine.prepare(chain(5)))
    result = engine.run(engine.prepare(chain(5)), record_events=True)
    assert result.executed == []
    assert result.outputs == {"out": {"value": [5]}}
    cached = [e for e in result.events if isinstance(e, NodesCached)]
    assert len(cached) == 1 and cached[0].nodes == ("c", "a0", "a1", "a2", "a3", "a4", "out")
    assert result.cached == ["out"]  # the only cache lookup needed


def test_changing_one_constant_reruns_only_descendants(engine):
    wf = {"c1": {"class_type": "Const", "inputs": {"value": 1}},
          "c2": {"class_type": "Const", "inputs": {"value": 10}},
          "x": {"class_type": "AddOne", "inputs": {"x": ["c1", 0]}},
          "y": {"class_type": "AddOne", "inputs": {"x": ["c2", 0]}},
          "sum": {"class_type": "Add", "inputs": {"a": ["x", 0], "b": ["y", 0]}},
          "out": {"class_type": "Sink", "inputs": {"value": ["sum", 0]}}}
    assert engine.run(engine.prepare(wf)).outputs["out"] == {"value": [13]}
    wf["c2"]["inputs"]["value"] = 20
    result = engine.run(engine.prepare(wf))
    assert result.outputs["out"] == {"value": [23]}
    assert result.executed == ["c2", "y", "sum", "out"]
    assert set(result.cached) == {"x"}  # c1 is not even looked at: x's cached value suffices


def test_identical_subgraph_in_another_workflow_hits_cache(engine):
    engine.run(engine.prepare(chain(4, start=7)))
    other = {"k": {"class_type": "Const", "inputs": {"value": 7}},
             "p": {"class_type": "AddOne", "inputs": {"x": ["k", 0]}},
             "q": {"class_type": "AddOne", "inputs": {"x": ["p", 0]}},
             "r": {"class_type": "Add", "inputs": {"a": ["q", 0], "b": ["q", 0]}},
             "show": {"class_type": "Sink", "inputs": {"value": ["r", 0]}}}
    result = engine.run(engine.prepare(other))
    assert result.outputs["show"] == {"value": [18]}
    assert result.cached == ["q"]  # different ids, same content: reused
    assert result.executed == ["r", "show"]


def test_cache_key_includes_node_version(engine):
    prompt = engine.prepare(chain(1))
    engine.run(prompt)
    prompt.nodes["a0"].definition.meta = prompt.nodes["a0"].definition.meta.model_copy(update={"version": "1.1.0"})
    assert engine.run(prompt).executed == ["a0", "out"]


def test_cache_bound_by_entries_evicts_lru(make_engine):
    from nodegraph.cache import OutputCache

    engine = make_engine(cache=OutputCache(max_entries=4, max_bytes=10**9))
    engine.run(engine.prepare(chain(10)))
    assert len(engine.cache) == 4
    assert engine.cache.stats.evictions == 8
    # The most recent entries survive: the output and its parent; the start of the chain was evicted.
    assert engine.run(engine.prepare(chain(10))).executed == []


def test_cache_bound_by_bytes(make_engine):
    from nodegraph.cache import OutputCache

    engine = make_engine(cache=OutputCache(max_entries=1000, max_bytes=300 * 1024))
    for tag in "abcde":
        wf = {"b": {"class_type": "Blob", "inputs": {"kb": 100, "tag": tag}},
              "s": {"class_type": "BlobSink", "inputs": {"blob": ["b", 0]}}}
        engine.run(engine.prepare(wf)).raise_for_status()
    assert engine.cache.nbytes <= 300 * 1024
    assert engine.cache.stats.evictions >= 2
    first = {"b": {"class_type": "Blob", "inputs": {"kb": 100, "tag": "a"}},
             "s": {"class_type": "BlobSink", "inputs": {"blob": ["b", 0]}}}
    assert engine.run(engine.prepare(first)).executed == ["b", "s"]  # evicted, so recomputed


def test_nondeterministic_nodes_bypass_cache(engine):
    wf = {"n": {"class_type": "Noise", "inputs": {}},
          "a": {"class_type": "AddOne", "inputs": {"x": ["n", 0]}},
          "out": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}}
    first = engine.run(engine.prepare(wf)).outputs["out"]["value"][0]
    second = engine.run(engine.prepare(wf))
    assert second.executed == ["n", "a", "out"]
    assert second.outputs["out"]["value"][0] == first + 1


def test_event_sequence(engine):
    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "s": {"class_type": "Slow", "inputs": {"x": ["c", 0], "steps": 3, "delay": 0}},
          "out": {"class_type": "Sink", "inputs": {"value": ["s", 0]}}}
    events = engine.run(engine.prepare(wf), record_events=True).events
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RunStarted", "NodeStarted", "NodeFinished", "NodeStarted", "NodeProgress", "NodeProgress",
                     "NodeProgress", "NodeFinished", "NodeStarted", "NodeFinished", "RunFinished"]
    assert isinstance(events[0], RunStarted) and set(events[0].nodes) == {"c", "s", "out"}
    progress = [e for e in events if isinstance(e, NodeProgress)]
    assert [(p.node_id, p.value, p.max) for p in progress] == [("s", 1, 3), ("s", 2, 3), ("s", 3, 3)]
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert finished[-1].ui == {"value": [1]}
    assert isinstance(events[-1], RunFinished) and events[-1].outputs == {"out": {"value": [1]}}


def test_interrupt_is_cooperative(engine):
    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "s": {"class_type": "Slow", "inputs": {"x": ["c", 0], "steps": 500, "delay": 0.01}},
          "out": {"class_type": "Sink", "inputs": {"value": ["s", 0]}}}
    flag = InterruptFlag()
    timer = threading.Timer(0.2, flag.set)
    timer.start()
    result = engine.run(engine.prepare(wf), interrupt=flag, record_events=True)
    timer.cancel()
    assert result.status == "interrupted"
    assert isinstance(result.events[-1], RunInterrupted) and result.events[-1].node_id == "s"
    steps = [e.value for e in result.events if isinstance(e, NodeProgress)]
    assert 0 < len(steps) < 500
    # Interrupted before a node starts, too.
    flag = InterruptFlag()
    flag.set()
    assert engine.run(engine.prepare({"k": {"class_type": "Const", "inputs": {"value": 2}},
                                      "o": {"class_type": "Sink", "inputs": {"value": ["k", 0]}}}),
                      interrupt=flag).status == "interrupted"


def test_failing_node_reports_and_keeps_earlier_results_cached(engine):
    wf = {"c": {"class_type": "Const", "inputs": {"value": 4}},
          "a": {"class_type": "AddOne", "inputs": {"x": ["c", 0]}},
          "f": {"class_type": "Fail", "inputs": {"x": ["a", 0], "message": "kaputt"}},
          "out": {"class_type": "Sink", "inputs": {"value": ["f", 0]}}}
    result = engine.run(engine.prepare(wf), record_events=True)
    assert result.status == "error"
    err = result.error
    assert isinstance(err, RunFailed) and result.events[-1] is err
    assert (err.node_id, err.class_type, err.exception_type, err.exception_message) == \
        ("f", "Fail", "RuntimeError", "kaputt")
    assert "raise RuntimeError(message)" in err.traceback
    assert err.inputs == {"x": "5", "message": "'kaputt'"}
    assert err.executed == ("c", "a")
    wf["f"] = {"class_type": "AddOne", "inputs": {"x": ["a", 0]}}
    retry = engine.run(engine.prepare(wf))
    assert retry.cached == ["a"] and retry.executed == ["f", "out"]


def test_wrong_number_of_return_values_is_a_node_error(engine):
    from nodegraph import Node, Output
    from nodegraph.node import NodeDef, describe

    class Bad(Node):
        OUTPUTS = (Output("INT"), Output("INT"))

        def execute(self, ctx):
            return (1,)

    engine.registry.nodes["Bad"] = NodeDef(Bad, describe(Bad), "test")
    wf = {"b": {"class_type": "Bad", "inputs": {}}, "o": {"class_type": "Sink", "inputs": {"value": ["b", 1]}}}
    result = engine.run(engine.prepare(wf))
    assert result.status == "error" and "returned 1 value(s) but declares 2" in result.error.exception_message


def test_started_events_only_for_executed_nodes(engine):
    engine.run(engine.prepare(chain(2)))
    events = engine.run(engine.prepare(chain(2)), record_events=True).events
    assert not [e for e in events if isinstance(e, NodeStarted)]


def test_int_power_that_cannot_fit_fails_at_once(tmp_path):
    import time

    from nodegraph.config import EngineConfig
    from nodegraph.engine import Engine
    from nodegraph.registry import Registry

    engine = Engine(EngineConfig(home=tmp_path),
                    registry=Registry.load(builtins=("nodes.utils",), entry_points=False, source_plugins=False))
    graph = {"1": {"class_type": "IntMath", "inputs": {"a": 7, "b": 2**62, "operation": "power"}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    start = time.perf_counter()
    result = engine.run(engine.prepare(graph))
    assert result.status == "error" and "does not fit a 64-bit integer" in result.error.exception_message
    assert time.perf_counter() - start < 5
    graph["1"]["inputs"].update(a=2, b=10)
    assert engine.run(engine.prepare(graph)).status == "success"
