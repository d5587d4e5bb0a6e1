"""A safe arithmetic-expression evaluator (ComfyMathExpression): parsed with ``ast``, evaluated over a whitelist.

Never ``eval``/``exec``. What is allowed: int/float/bool literals, the given variable names, ``+ - * / // % **``,
unary ``+ - not``, comparisons, ``and``/``or``, ``x if c else y``, list/tuple literals, ``values[i]``, and calls of
the functions in ``FUNCTIONS`` (the ones ComfyUI's node offers). Attribute access, strings, keyword arguments,
lambdas, comprehensions and every other construct are refused with an error saying what to write instead.
Limits (``ExpressionLimits``) bound the text length, the syntax-tree size and depth, exponents and the size of
integers, so that no expression can run for long or take much memory.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

Number = int | float | bool


class ExpressionError(ValueError):
    """An expression that cannot be evaluated; the message says why and what to change."""


@dataclass(frozen=True)
class ExpressionLimits:
    """Bounds on one evaluation: characters, syntax-tree nodes and depth, exponent, integer size (bits)."""

    max_chars: int = 2000
    max_nodes: int = 500
    max_depth: int = 50
    max_exponent: int = 4000
    max_int_bits: int = 4096


def _sum(*args: Any) -> Number:
    """``sum(values)`` and ``sum(a, b, c)`` alike."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return sum(args[0])
    return sum(args)


#: The functions an expression may call (those of ComfyUI's Math Expression node).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": pow,
    "sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2,
    "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float,
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}
_REFUSED_HINT = {
    ast.Attribute: "attribute access (x.y) is not allowed; use the listed functions, e.g. sqrt(a) not math.sqrt(a)",
    ast.Lambda: "lambdas are not allowed", ast.NamedExpr: "assignments (:=) are not allowed",
    ast.ListComp: "comprehensions are not allowed; use sum(values), min(values) or max(values)",
    ast.GeneratorExp: "comprehensions are not allowed; use sum(values), min(values) or max(values)",
    ast.Dict: "dictionaries are not allowed", ast.Set: "sets are not allowed",
}


class _Evaluator:
    """One evaluation over ``names`` within ``limits``."""

    def __init__(self, names: Mapping[str, Any], limits: ExpressionLimits) -> None:
        self.names = names
        self.limits = limits

    def _int_fits(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > self.limits.max_int_bits:
            raise ExpressionError(f"an intermediate integer has {value.bit_length()} bits, over the limit of "
                                  f"{self.limits.max_int_bits}; use smaller numbers or float(...)")
        return value

    def _power(self, base: Any, exp: Any) -> Any:
        if isinstance(exp, (int, float)) and abs(exp) > self.limits.max_exponent:
            raise ExpressionError(f"exponent {exp!r} is over the limit of {self.limits.max_exponent}; "
                                  "use a smaller exponent")
        if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
            if abs(base).bit_length() * exp > self.limits.max_int_bits + 64:
                raise ExpressionError(f"{base} ** {exp} would have about {abs(base).bit_length() * exp} bits, over "
                                      f"the limit of {self.limits.max_int_bits}; use float({base}) ** {exp} or "
                                      "smaller numbers")
        return pow(base, exp)

    def eval(self, node: ast.AST) -> Any:
        """The value of one syntax-tree node."""
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (bool, int, float)):
                return self._int_fits(node.value)
            raise ExpressionError(f"the literal {node.value!r} is not a number; only numbers are allowed")
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            known = ", ".join(sorted(self.names)) or "none"
            hint = f"; {node.id}(...) is a function: call it" if node.id in FUNCTIONS else ""
            raise ExpressionError(f"unknown name {node.id!r}{hint}; the variables are: {known} "
                                  "(connect more inputs to get more)")
        if isinstance(node, ast.BinOp):
            kind = type(node.op)
            if kind not in _BINARY:
                raise ExpressionError(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
            left, right = self.eval(node.left), self.eval(node.right)
            if kind is ast.Pow:
                return self._int_fits(self._power(left, right))
            return self._int_fits(_BINARY[kind](left, right))
        if isinstance(node, ast.UnaryOp):
            value = self.eval(node.operand)
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.UAdd):
                return +value
            if isinstance(node.op, ast.Not):
                return not value
            raise ExpressionError("operator ~ is not allowed; use -x, +x or not x")
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                if type(op) not in _COMPARE:
                    raise ExpressionError("only == != < <= > >= comparisons are allowed")
                right = self.eval(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            value = self.eval(node.values[0])
            for item in node.values[1:]:
                if isinstance(node.op, ast.And) and not value or isinstance(node.op, ast.Or) and value:
                    return value
                value = self.eval(item)
            return value
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(item) for item in node.elts]
        if isinstance(node, ast.Subscript):
            seq, index = self.eval(node.value), self.eval(node.slice)
            if not isinstance(seq, list) or not isinstance(index, int) or isinstance(index, bool):
                raise ExpressionError("indexing works only as values[i] with an integer i")
            if not -len(seq) <= index < len(seq):
                raise ExpressionError(f"values[{index}] is out of range: there are {len(seq)} values")
            return seq[index]
        if isinstance(node, ast.Call):
            return self._call(node)
        hint = _REFUSED_HINT.get(type(node), f"{type(node).__name__} is not allowed in a math expression")
        raise ExpressionError(hint)

    def _call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"function {what!r} is not allowed; the functions are: "
                                  f"{', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExpressionError(f"{node.func.id}() takes positional arguments only")
        args = [self.eval(arg) for arg in node.args]
        name = node.func.id
        if name == "pow" and len(args) >= 2:
            if len(args) == 3:
                raise ExpressionError("pow() takes two arguments here; write pow(a, b) % m")
            return self._int_fits(self._power(args[0], args[1]))
        try:
            return self._int_fits(FUNCTIONS[name](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ExpressionError):
                raise
            raise ExpressionError(f"{name}({', '.join(map(repr, args))}) failed: {exc}") from None


def parse_expression(expression: str, limits: ExpressionLimits | None = None) -> ast.Expression:
    """Parse ``expression`` within ``limits``; raises ``ExpressionError`` for bad syntax or an oversized tree."""
    limits = limits or ExpressionLimits()
    if not expression.strip():
        raise ExpressionError("the expression is empty; write one such as a + b")
    if len(expression) > limits.max_chars:
        raise ExpressionError(f"the expression has {len(expression)} characters, over the limit of "
                              f"{limits.max_chars}; shorten it")
    depth = deepest = 0
    for char in expression:  # bracket depth checked before parsing: deep nesting overflows the parser's stack
        depth += char in "([{"
        depth -= char in ")]}"
        deepest = max(deepest, depth)
    if deepest > limits.max_depth:
        raise ExpressionError(f"brackets are nested {deepest} deep, over the limit of {limits.max_depth}; "
                              "simplify the expression")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error at column {exc.offset}: {exc.msg}; write a Python-style arithmetic "
                              "expression such as (a + b) * 2") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ExpressionError(f"the expression cannot be parsed ({type(exc).__name__}); simplify it") from None
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, level = stack.pop()
        count += 1
        if count > limits.max_nodes or level > limits.max_depth:
            raise ExpressionError(f"the expression is too large (over {limits.max_nodes} parts or "
                                  f"{limits.max_depth} levels deep); simplify it")
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return tree


def evaluate(expression: str, names: Mapping[str, Any], limits: ExpressionLimits | None = None) -> Any:
    """Evaluate ``expression`` with the variables ``names``; raises ``ExpressionError`` saying what to fix."""
    limits = limits or ExpressionLimits()
    tree = parse_expression(expression, limits)
    try:
        return _Evaluator(names, limits).eval(tree)
    except ZeroDivisionError:
        raise ExpressionError("division by zero; make sure the divisor is not 0") from None
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ExpressionError):
            raise
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None
