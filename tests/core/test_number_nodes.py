"""Number nodes (nodes/numbers.py) and the expression evaluator (nodegraph/expressions.py): results as ComfyUI
gives them, and hostile expressions refused with errors that say what to fix."""

from __future__ import annotations

import math
import time

import pytest

from nodegraph.expressions import ExpressionError, ExpressionLimits, evaluate
from nodegraph.nodes import numbers as n


def run(cls, **inputs):
    """All outputs of one node run without an engine."""
    return cls().execute(None, **inputs)


@pytest.mark.parametrize("expression,expected", [
    ("a + b", 5), ("a * b - 1", 5), ("b / a", 1.5), ("b // a", 1), ("b % a", 1), ("a ** 10", 1024),
    ("-a + +b", 1), ("a < b", True), ("1 < a <= 2 < b", True), ("a == 3 or b == 3", True), ("not a", False),
    ("a if a > b else b", 3), ("sum(values)", 5), ("sum(a, b, 10)", 15), ("max(values) - min(values)", 1),
    ("values[-1]", 3), ("round(2.5) + round(3.14159, 2)", 2 + 3.14), ("sqrt(16) + abs(-2)", 6.0),
    ("ceil(1.2) + floor(1.8)", 3), ("log(math_e)", 1.0), ("log2(8) + log10(1000)", 6.0), ("int(7.9) + float(1)", 8.0),
    ("pow(2, 8)", 256), ("sin(0) + cos(0) + tan(0)", 1.0), ("True + 1", 2), ("1e3 * 2", 2000.0),
    ("max(5, round(a * 24)) + (5 - (max(5, round(a * 24)) % 17)) % 17", 56),  # from an official template (48 + 8)
])
def test_expressions_evaluate_like_python(expression: str, expected: object) -> None:
    names = {"a": 2, "b": 3, "values": [2, 3], "math_e": math.e}
    assert evaluate(expression, names) == pytest.approx(expected)


@pytest.mark.parametrize("expression,needle", [
    ("__import__('os').system('true')", "__import__.*is not allowed"),
    ("a.__class__", "attribute access"),
    ("(1).__class__.__bases__", "attribute access"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("eval('1')", "function 'eval' is not allowed"),
    ("'a' * 10", "not a number"),
    ("[x for x in values]", "comprehensions are not allowed"),
    ("(lambda: 1) + 1", "lambdas are not allowed"),
    ("(y := 3)", "assignments"),
    ("{1: 2}", "dictionaries are not allowed"),
    ("9 ** 9 ** 9", "over the limit of 4000"),
    ("pow(2, 10 ** 6)", "over the limit of 4000"),
    ("10 ** 4000 * 10 ** 4000", "bits"),
    ("2 ** 4000 * 2 ** 4000", "bits"),
    ("(" * 100 + "1" + ")" * 100, "nested 100 deep"),
    ("-" * 5000 + "1", "characters"),
    ("+".join(["1"] * 400), "too large"),
    ("unknown + 1", "unknown name 'unknown'"),
    ("sqrt(-1)", "math domain error"),
    ("a / 0", "division by zero"),
    ("max(a=1)", "positional arguments only"),
    ("a ~ b", "syntax error"),
    ("~a", "~ is not allowed"),
    ("   ", "empty"),
    ("values[5]", "out of range"),
])
def test_hostile_or_bad_expressions_are_refused(expression: str, needle: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExpressionError, match=needle):
        evaluate(expression, {"a": 2, "b": 3, "values": [2, 3]})
    assert time.perf_counter() - start < 1.0  # refused before any costly work


def test_limits_can_be_changed() -> None:
    assert evaluate("2 ** 5000", {}, ExpressionLimits(max_exponent=10_000, max_int_bits=10_000)) == 2 ** 5000
    with pytest.raises(ExpressionError, match="over the limit of 10; use a smaller exponent"):
        evaluate("2 ** 11", {}, ExpressionLimits(max_exponent=10))
    with pytest.raises(ExpressionError, match="over the limit of 5; shorten it"):
        evaluate("1 + 1 + 1", {}, ExpressionLimits(max_chars=5))


def test_math_expression_node_outputs_float_int_bool() -> None:
    assert run(n.ComfyMathExpression, expression="a / b", values={"a": 7, "b": 2}) == (3.5, 3, True)
    assert run(n.ComfyMathExpression, expression="a - a", values={"a": 1.5}) == (0.0, 0, False)
    assert run(n.ComfyMathExpression, expression="a and b", values={"a": True, "b": False}) == (0.0, 0, False)


def test_math_expression_node_errors_name_node_input_and_fix() -> None:
    with pytest.raises(ValueError, match=r"ComfyMathExpression: input 'expression' .*is not allowed"):
        run(n.ComfyMathExpression, expression="__import__('os')", values={"a": 1})
    with pytest.raises(ValueError, match="must give a number.*sum\\(\\), min\\(\\) or max\\(\\)"):
        run(n.ComfyMathExpression, expression="values", values={"a": 1})
    with pytest.raises(ValueError, match="not a finite number"):
        run(n.ComfyMathExpression, expression="a * 1e308 * 10", values={"a": 1.0})
    with pytest.raises(ValueError, match="unknown name 'c'.*connect more inputs"):
        run(n.ComfyMathExpression, expression="a + c", values={"a": 1})


def test_number_convert() -> None:
    assert run(n.ComfyNumberConvert, value=True) == (1.0, 1)
    assert run(n.ComfyNumberConvert, value=7) == (7.0, 7)
    assert run(n.ComfyNumberConvert, value=-2.7) == (-2.7, -2)
    assert run(n.ComfyNumberConvert, value=" 12 ") == (12.0, 12)
    assert run(n.ComfyNumberConvert, value="2.9") == (2.9, 2)
    assert run(n.ComfyNumberConvert, value="1e3") == (1000.0, 1000)
    for bad, needle in (("", "empty string"), ("abc", "is not a number"), ("inf", "not a finite"),
                        (float("nan"), "not a finite")):
        with pytest.raises(ValueError, match=needle):
            run(n.ComfyNumberConvert, value=bad)
    with pytest.raises(TypeError, match="connect an INT, FLOAT, STRING or BOOLEAN"):
        run(n.ComfyNumberConvert, value=[1])


@pytest.mark.parametrize("ratio,mp,multiple,expected", [
    ("1:1 (Square)", 1.0, 8, (1024, 1024)), ("16:9 (Widescreen)", 1.0, 8, (1368, 768)),
    ("9:16 (Portrait Widescreen)", 1.0, 64, (768, 1344)), ("21:9 (Ultrawide)", 2.0, 16, (2208, 944)),
    ("3:2 (Photo)", 0.1, 8, (400, 264)),
])
def test_resolution_selector(ratio: str, mp: float, multiple: int, expected: tuple[int, int]) -> None:
    assert run(n.ResolutionSelector, aspect_ratio=ratio, megapixels=mp, multiple=multiple) == expected


def test_number_nodes_in_a_graph(nodegraph_config) -> None:
    """Autogrow inputs arrive as values.a, values.b (ComfyUI's prompt format) and reach the expression."""
    from nodegraph.testing_graphs import capture_engine, run_captured

    engine = capture_engine(nodegraph_config)
    graph = {"seed": {"class_type": "SeedNode", "inputs": {"seed": 41}},
             "res": {"class_type": "ResolutionSelector", "inputs": {"aspect_ratio": "16:9 (Widescreen)",
                                                                    "megapixels": 1.0, "multiple": 8}},
             "math": {"class_type": "ComfyMathExpression", "inputs": {
                 "expression": "a + 1 + b / 8", "values.a": ["seed", 0], "values.b": ["res", 0]}},
             "conv": {"class_type": "ComfyNumberConvert", "inputs": {"value": ["math", 0]}},
             "c1": {"class_type": "Capture", "inputs": {"value": ["math", 1]}},
             "c2": {"class_type": "Capture", "inputs": {"value": ["conv", 0]}}}
    _, values = run_captured(engine, graph)
    assert values == {"c1": 213, "c2": 213.0}
    from nodegraph.validation import ValidationReport

    with pytest.raises(ValidationReport) as info:  # the group needs one value connected
        engine.prepare({"m": {"class_type": "ComfyMathExpression", "inputs": {"expression": "1"}},
                        "c": {"class_type": "Capture", "inputs": {"value": ["m", 0]}}})
    assert "connect FLOAT,INT,BOOLEAN outputs to values.a" in info.value.render()
