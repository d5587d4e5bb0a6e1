"""Validation: every error type, all problems at once, ComfyUI's report shape."""

from __future__ import annotations

import pytest

from nodegraph.validation import ValidationReport
from nodegraph.workflow import WorkflowFormatError, parse_workflow, unwrap


def errors_of(engine, wf: dict) -> dict:
    with pytest.raises(ValidationReport) as info:
        engine.prepare(wf)
    return info.value.to_json()


def types(report: dict, node: str) -> list[str]:
    return [e["type"] for e in report["node_errors"][node]["errors"]]


def test_valid_workflow_plans_in_topological_order(engine):
    wf = {"out": {"class_type": "Sink", "inputs": {"value": ["a", 0]}},
          "a": {"class_type": "AddOne", "inputs": {"x": ["c", 0]}},
          "c": {"class_type": "Const", "inputs": {"value": "3"}}}
    prompt = engine.prepare(wf)
    assert prompt.order == ["c", "a", "out"] and prompt.outputs == ["out"]
    assert prompt.nodes["c"].constants == {"value": 3}  # coerced by pydantic


def test_unknown_class_suggests_close_names(engine):
    report = errors_of(engine, {"1": {"class_type": "Cnost", "inputs": {}},
                                "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}})
    err = report["node_errors"]["1"]["errors"][0]
    assert err["type"] == "missing_node_type" and "Const" in err["details"]
    assert report["node_errors"]["1"]["class_type"] == "Cnost"


def test_missing_required_input(engine):
    report = errors_of(engine, {"1": {"class_type": "AddOne", "inputs": {}},
                                "2": {"class_type": "Sink", "inputs": {"value": ["1", 0]}}})
    err = report["node_errors"]["1"]["errors"][0]
    assert err["type"] == "required_input_missing" and err["extra_info"]["input_name"] == "x"
    assert report["node_errors"]["1"]["dependent_outputs"] == ["2"]


def test_optional_input_may_be_omitted(engine):
    prompt = engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 1}},
                             "a": {"class_type": "Add", "inputs": {"a": ["c", 0]}},
                             "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}})
    assert prompt.order == ["c", "a", "o"]
    assert prompt.nodes["a"].links == {"a": ("c", 0)} and "b" not in prompt.nodes["a"].constants


def test_bad_links(engine):
    report = errors_of(engine, {"c": {"class_type": "Const", "inputs": {"value": 1}},
                                "a": {"class_type": "Add", "inputs": {"a": ["nope", 0], "b": ["c", 5]}},
                                "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}})
    assert types(report, "a") == ["bad_linked_input", "bad_linked_input"]
    assert "does not exist" in report["node_errors"]["a"]["errors"][0]["message"]
    assert "has 1 output(s)" in report["node_errors"]["a"]["errors"][1]["message"]


def test_type_mismatch(engine):
    report = errors_of(engine, {"b": {"class_type": "Blob", "inputs": {"kb": 1, "tag": ""}},
                                "a": {"class_type": "AddOne", "inputs": {"x": ["b", 0]}},
                                "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}})
    err = report["node_errors"]["a"]["errors"][0]
    assert err["type"] == "return_type_mismatch" and "expects INT" in err["message"] and "BLOB" in err["message"]


def test_constant_errors(engine):
    report = errors_of(engine, {
        "c": {"class_type": "Const", "inputs": {"value": "seven"}},
        "lo": {"class_type": "Const", "inputs": {"value": -5000}},
        "hi": {"class_type": "Const", "inputs": {"value": 5000}},
        "m": {"class_type": "IntMath", "inputs": {"a": 1, "b": 2, "operation": "frobnicate"}},
        "l": {"class_type": "AddOne", "inputs": {"x": 3}},
        "o1": {"class_type": "Sink", "inputs": {"value": ["c", 0]}},
        "o2": {"class_type": "Sink", "inputs": {"value": ["lo", 0]}},
        "o3": {"class_type": "Sink", "inputs": {"value": ["hi", 0]}},
        "o4": {"class_type": "Sink", "inputs": {"value": ["m", 0]}},
        "o5": {"class_type": "Sink", "inputs": {"value": ["l", 0]}}})
    assert types(report, "c") == ["invalid_input_type"]
    assert types(report, "lo") == ["value_smaller_than_min"]
    assert types(report, "hi") == ["value_bigger_than_max"]
    assert types(report, "m") == ["value_not_in_list"]
    assert "add" in report["node_errors"]["m"]["errors"][0]["details"]
    assert types(report, "l") == ["invalid_input_type"]  # a link-only input given a constant
    assert report["node_errors"]["hi"]["errors"][0]["extra_info"]["received_value"] == 5000


def test_custom_validation(engine):
    report = errors_of(engine, {"r": {"class_type": "RandomInt", "inputs": {"min": 10, "max": 1}},
                                "o": {"class_type": "ShowValue", "inputs": {"value": ["r", 0]}}})
    assert types(report, "r") == ["custom_validation_failed"]


def test_cycle_names_its_nodes(engine):
    report = errors_of(engine, {"a": {"class_type": "AddOne", "inputs": {"x": ["b", 0]}},
                                "b": {"class_type": "AddOne", "inputs": {"x": ["a", 0]}},
                                "o": {"class_type": "Sink", "inputs": {"value": ["b", 0]}}})
    assert types(report, "a") == ["dependency_cycle"] and types(report, "b") == ["dependency_cycle"]
    message = report["node_errors"]["a"]["errors"][0]["message"]
    assert "a (AddOne)" in message and "b (AddOne)" in message


def test_no_outputs(engine):
    report = errors_of(engine, {"c": {"class_type": "Const", "inputs": {"value": 1}}})
    assert report["error"]["type"] == "prompt_no_outputs" and report["node_errors"] == {}


def test_all_problems_reported_at_once(engine):
    report = errors_of(engine, {
        "x": {"class_type": "Nope", "inputs": {}},
        "c": {"class_type": "Const", "inputs": {"value": 99999}},
        "a": {"class_type": "AddOne", "inputs": {}},
        "o1": {"class_type": "Sink", "inputs": {"value": ["c", 0]}},
        "o2": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}})
    assert set(report["node_errors"]) == {"x", "c", "a"}
    assert report["error"]["type"] == "prompt_outputs_failed_validation"
    assert report["error"]["details"] == "3 problem(s) in 3 node(s)"


def test_render_for_people(engine):
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 99999}},
                        "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}})
    text = info.value.render()
    assert "node c (Const), input 'value'" in text and "less than or equal to 1000" in text


def test_unreachable_nodes_are_not_validated(engine):
    # "junk" misses its required input; it feeds no output, so it is neither reported nor planned.
    prompt = engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 1}},
                             "junk": {"class_type": "AddOne", "inputs": {}},
                             "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}})
    assert set(prompt.nodes) == {"c", "o"} and prompt.order == ["c", "o"] and prompt.outputs == ["o"]


def test_partial_execution_targets(engine):
    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "a": {"class_type": "AddOne", "inputs": {"x": ["c", 0]}},
          "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}},
          "o2": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}}
    prompt = engine.prepare(wf, targets=["o2"])
    assert prompt.outputs == ["o2"] and set(prompt.nodes) == {"c", "o2"}


def test_list_constant_wrapper_and_format_errors(engine):
    workflow = parse_workflow({"1": {"class_type": "X", "inputs": {"v": {"__value__": [1, 2]}}}})
    assert unwrap(workflow.nodes()["1"].inputs["v"]) == [1, 2]
    with pytest.raises(WorkflowFormatError, match="UI format"):
        parse_workflow({"nodes": [], "links": []})
    with pytest.raises(WorkflowFormatError, match="class_type"):
        parse_workflow({"1": {"inputs": {}}})
    with pytest.raises(WorkflowFormatError):
        parse_workflow([])


def test_missing_partial_execution_target_is_a_report(engine):
    with pytest.raises(ValidationReport) as info:
        engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 1}},
                        "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}}, targets=["o", "99"])
    report = info.value.to_json()
    assert report["error"]["type"] == "invalid_target" and "'99'" in report["error"]["message"]
    assert "partial_execution_targets" in report["error"]["details"]


class _Raising:
    """validate_inputs hooks that raise or answer garbage, standing in for buggy plugins."""

    @staticmethod
    def boom(config, **constants):
        raise ZeroDivisionError("plugin bug")

    @staticmethod
    def exits(config, **constants):
        raise SystemExit(3)


@pytest.mark.parametrize("hook, text", [("boom", "ZeroDivisionError: plugin bug"), ("exits", "SystemExit")])
def test_validate_inputs_that_raises_is_that_nodes_error(engine, monkeypatch, hook, text):
    definition = engine.registry.get("Const")
    monkeypatch.setattr(definition.cls, "validate_inputs", classmethod(
        lambda cls, config, **c: getattr(_Raising, hook)(config, **c)))
    report = errors_of(engine, {"c": {"class_type": "Const", "inputs": {"value": 1}},
                                "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}})
    assert set(report["node_errors"]) == {"c"}
    err = report["node_errors"]["c"]["errors"][0]
    assert err["type"] == "custom_validation_failed"
    assert "Const.validate_inputs()" in err["message"] and text in err["message"]
    assert "plugin" in err["details"]


def test_unknown_types_suggest_once_per_type(engine, monkeypatch):
    calls = []
    original = engine.registry.suggest
    monkeypatch.setattr(engine.registry, "suggest", lambda name, n=3: calls.append(name) or original(name, n))
    wf = {str(i): {"class_type": "Cnost" if i % 2 else "AdOne", "inputs": {}} for i in range(500)}
    report = errors_of(engine, wf)
    assert sorted(calls) == ["AdOne", "Cnost"]
    assert "Const" in report["node_errors"]["1"]["errors"][0]["details"]
    assert "AddOne" in report["node_errors"]["0"]["errors"][0]["details"]


def _unknown(n: int) -> dict:
    return {str(i): {"class_type": f"Missing{i % 7}", "inputs": {"x": [str(i - 1), 0]} if i else {}}
            for i in range(n)}


def _seconds(engine, wf) -> float:
    import time

    start = time.perf_counter()
    with pytest.raises(ValidationReport):
        engine.prepare(wf)
    return time.perf_counter() - start


def test_validation_is_linear_in_the_node_count(engine):
    """Unknown types, every node an output and in a chain: was 6 s for 1,000 nodes and 27 s for 2,000."""
    _seconds(engine, _unknown(200))  # warm up
    small, big = _seconds(engine, _unknown(1000)), _seconds(engine, _unknown(8000))
    assert big < 8 * small * 3 + 0.3, (small, big)  # ×8 nodes costs about ×8, not ×64 (a ratio: load-independent)


def test_dependent_outputs_through_a_chain_and_a_cycle(engine):
    wf = {"a": {"class_type": "AddOne", "inputs": {}},
          "b": {"class_type": "AddOne", "inputs": {"x": ["a", 0]}},
          "o1": {"class_type": "Sink", "inputs": {"value": ["b", 0]}},
          "o2": {"class_type": "Sink", "inputs": {"value": ["a", 0]}},
          "p": {"class_type": "AddOne", "inputs": {"x": ["q", 0]}},
          "q": {"class_type": "AddOne", "inputs": {"x": ["p", 0]}},
          "o3": {"class_type": "Sink", "inputs": {"value": ["q", 0]}}}
    report = errors_of(engine, wf)
    assert report["node_errors"]["a"]["dependent_outputs"] == ["o1", "o2"]
    assert report["node_errors"]["p"]["dependent_outputs"] == ["o3"]
    assert report["node_errors"]["q"]["dependent_outputs"] == ["o3"]


def test_validation_stops_when_asked(engine):
    from nodegraph.validation import ValidationCancelled

    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}}
    with pytest.raises(ValidationCancelled):
        engine.prepare(wf, should_stop=lambda: True)
    assert engine.prepare(wf, should_stop=lambda: False).outputs == ["o"]
