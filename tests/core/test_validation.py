"""Validation: every error type, all problems at once, ComfyUI's report shape."""

from __future__ import annotations

import pytest

from nodegraph.validation import ValidationReport
from nodegraph.workflow import WorkflowFormatError, parse_workflow


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
    engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 1}},
                    "a": {"class_type": "Add", "inputs": {"a": ["c", 0]}},
                    "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}}})


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
    engine.prepare({"c": {"class_type": "Const", "inputs": {"value": 1}},
                    "junk": {"class_type": "AddOne", "inputs": {}},
                    "o": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}})


def test_partial_execution_targets(engine):
    wf = {"c": {"class_type": "Const", "inputs": {"value": 1}},
          "a": {"class_type": "AddOne", "inputs": {"x": ["c", 0]}},
          "o": {"class_type": "Sink", "inputs": {"value": ["a", 0]}},
          "o2": {"class_type": "Sink", "inputs": {"value": ["c", 0]}}}
    prompt = engine.prepare(wf, targets=["o2"])
    assert prompt.outputs == ["o2"] and set(prompt.nodes) == {"c", "o2"}


def test_list_constant_wrapper_and_format_errors(engine):
    assert parse_workflow({"1": {"class_type": "X", "inputs": {"v": {"__value__": [1, 2]}}}})
    with pytest.raises(WorkflowFormatError, match="UI format"):
        parse_workflow({"nodes": [], "links": []})
    with pytest.raises(WorkflowFormatError, match="class_type"):
        parse_workflow({"1": {"inputs": {}}})
    with pytest.raises(WorkflowFormatError):
        parse_workflow([])
