"""Hypothesis strategies for hostile values: names that have broken path handling (traversal, absolute, NUL,
over-long, Windows), numbers JSON cannot hold (NaN, 1e400), lone surrogates, deep nesting and wrong types; JSON
schema values mixed with them; and a JSON writer that sends them as a hostile client would."""

from __future__ import annotations

import json
from typing import Any

from urllib.parse import quote

from hypothesis import strategies as st

#: Longest percent-encoded URL part (aiohttp refuses request lines over 8190 bytes by closing the connection).
MAX_URL_PART = 1500


class Raw(str):
    """JSON text inserted verbatim into a generated document (NaN, 1e400, deep nesting)."""


NASTY = ["", " ", ".", "..", "../", "../../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "C:\\Windows\\win.ini",
         "C:x", "\\\\server\\share", "\x00", "a\x00b.png", "x" * 300, "a/" * 150 + "b.png", "%00", "%2e%2e%2f",
         "..%2f..%2fx", "~", "$HOME", "\n", "a\r\nX-Injected: 1", "\ud800", "\udfff.png", "😀.png", "\u202egnp.exe",
         "NaN", "Infinity", "-1", "1e400", "99999999999999999999", "true", "null", "{}", "[]", "nul.png", "CON",
         "fuzz.png", "sub", "sub/fuzz.png", "input", "output", "temp", "workflows/a.json", "a.json",
         "../user/canary.json", "../../canary.txt", "../../../cwd/canary.txt", "queue.sqlite3", "../queue.sqlite3",
         "../server.lock", "txt2img.json", "index.json", "checkpoints", "nodegraph", "server_test_nodes"]
SEGMENTS = ["..", ".", "", "a", "fuzz.png", "sub", "\x00", "..\\..", "user", "default", "x" * 255, "canary.txt"]
RAW_NUMBERS = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e400"), Raw("1e-400"),
               Raw("123456789012345678901234567890"), Raw("-0")]


def hostile_text() -> st.SearchStrategy[str]:
    """Strings that have broken path handling and parsers before, plus random text."""
    return st.one_of(st.sampled_from(NASTY), st.text(max_size=20),
                     st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map("/".join),
                     st.integers(250, 5000).map(lambda n: "y" * n))


def _deep(n: int, kind: str) -> Raw:
    return Raw(("[" * n + "]" * n) if kind == "list" else ('{"a":' * n + "1" + "}" * n))


def hostile_json() -> st.SearchStrategy[Any]:
    """Any JSON-ish value: hostile scalars, non-finite numbers, small nested containers."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(RAW_NUMBERS),
                        hostile_text())
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(hostile_text(), c, max_size=4),
                        max_leaves=8)


def deep_json() -> st.SearchStrategy[Raw]:
    """Lists or objects nested past any sane depth (63 to 100,000 levels)."""
    return st.builds(_deep, st.sampled_from([63, 65, 900, 5000, 100_000]), st.sampled_from(["list", "dict"]))


def conforming(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a (small subset of) JSON Schema, each part sometimes replaced by a hostile value."""
    kind = schema.get("type")
    if "enum" in schema:
        base: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        base = st.fixed_dictionaries({k: conforming(v) for k, v in props.items() if k in required},
                                     optional={k: conforming(v) for k, v in props.items() if k not in required})
        if "additionalProperties" in schema:
            extra = st.dictionaries(hostile_text(), conforming(schema["additionalProperties"]), max_size=3)
            base = st.builds(lambda a, b: {**b, **a}, base, extra)
    elif kind == "array":
        base = st.lists(conforming(schema.get("items", {})), max_size=4)
    elif kind == "string":
        base = st.text(max_size=schema.get("maxLength", 40)) | hostile_text()
    elif kind == "integer":
        base = st.integers(-5, 1000) | st.integers()
    elif kind == "number":
        base = st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    elif kind == "boolean":
        base = st.booleans()
    else:
        return st.one_of(*[hostile_json()] * 4, deep_json())  # any JSON: now and then nested past the caps
    return st.one_of(base, base, base, hostile_json())


def dump_json(value: Any) -> bytes:
    """Serialise with Raw parts verbatim and lone surrogates as \\u escapes (what a hostile client sends)."""
    raws: list[str] = []

    def walk(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(str(v))
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    text = json.dumps(walk(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def encode(value: str, slashes: bool = False) -> str:
    """Percent-encode a path segment or query value (lone surrogates as their UTF-8-like bytes), capped in length."""
    quoted = quote(value.encode("utf-8", "surrogatepass"), safe="/" if slashes else "")
    while len(quoted) > MAX_URL_PART:
        value = value[: len(value) // 2]
        quoted = quote(value.encode("utf-8", "surrogatepass"), safe="/" if slashes else "")
    return quoted
