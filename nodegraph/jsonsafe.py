"""Standard JSON in and out: bounded nesting on the way in, no NaN/Infinity either way (RFC 8259)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Deepest nesting of lists/objects accepted in a document (real workflows nest a handful of levels).
MAX_DEPTH = 64


class JSONInputError(ValueError):
    """A document is not standard JSON, is nested too deeply, or holds a non-finite number."""


def _refuse_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON number; send a finite number or null")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONInputError(f"the string {text[:40]!r} holds a lone UTF-16 surrogate, which is not text; "
                             "send valid Unicode") from None


def _check_depth(value: Any, limit: int, strings: bool = False) -> None:
    """Walk the parsed document iteratively; raise when lists/objects nest deeper than ``limit`` (and, with
    ``strings``, when a string or key is not encodable Unicode)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if strings and isinstance(item, str):
            _check_text(item)
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise JSONInputError(f"the document nests lists/objects deeper than {limit} levels; flatten it")
            children = item.values() if isinstance(item, dict) else item
            if strings and isinstance(item, dict):
                for key in item:
                    _check_text(key)
            stack.extend((child, depth + 1) for child in children
                         if isinstance(child, (dict, list)) or (strings and isinstance(child, str)))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise JSONInputError("a number is too large to be finite (e.g. 1e400); send a finite number")
    return value


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse standard JSON; refuses NaN/Infinity/overflowing numbers and nesting deeper than ``max_depth``."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=lambda s: _finite(float(s)))
    except RecursionError:
        raise JSONInputError(f"the document nests lists/objects deeper than {max_depth} levels; flatten it") from None
    _check_depth(value, max_depth, strings=bool(_SURROGATE_ESCAPE.search(text)))
    return value


def scrub(value: Any, _depth: int = 0) -> Any:
    """A copy with every non-finite float replaced by None and tuples as lists (for data of unknown origin)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _depth > 200:
        return None
    if isinstance(value, dict):
        return {str(k): scrub(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, _depth + 1) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Serialise as standard JSON: non-finite floats become null instead of the invalid ``NaN``/``Infinity``."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(scrub(value), allow_nan=False, **kwargs)
