"""String, regex and JSON nodes (ComfyUI's comfy_extras/nodes_string.py: names, inputs and behaviour).

Regular expressions run on Python's ``re``, which has no timeout: a pattern with nested quantifiers such as
``(a+)+$`` can backtrack for a very long time on a hostile text. What bounds it here: patterns are at most
``MAX_PATTERN_CHARS`` characters and the searched text at most ``MAX_TEXT_CHARS``; write possessive quantifiers
(``a++``) or atomic groups (``(?>...)``) to rule out backtracking in a pattern of your own.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from nodegraph.api import Boolean, Combo, Int, Link, Node, Output, String, hookimpl, with_options

#: Longest regular expression accepted (characters).
MAX_PATTERN_CHARS = 1000
#: Longest text a regular expression runs over (characters).
MAX_TEXT_CHARS = 1_000_000

_CATEGORY = "utils/string"  # ComfyUI v0.8.0's category for these nodes (newer releases say "text")


def _flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return (re.IGNORECASE if case_insensitive else 0) | (re.MULTILINE if multiline else 0) | \
        (re.DOTALL if dotall else 0)


@lru_cache(maxsize=64)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


def compile_pattern(node: str, pattern: str, text: str, flags: int) -> re.Pattern[str]:
    """``pattern`` compiled, after the length limits; a bad one raises ``ValueError`` naming the node and input."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"{node}: input 'regex_pattern' is {len(pattern):,} characters; the limit is "
                         f"{MAX_PATTERN_CHARS:,}; shorten the pattern")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"{node}: input 'string' is {len(text):,} characters; regular expressions run on at most "
                         f"{MAX_TEXT_CHARS:,}; split the text or use Replace/Contains for plain text")
    try:
        return _compiled(pattern, flags)
    except re.error as exc:
        raise ValueError(f"{node}: input 'regex_pattern' {pattern[:80]!r} is not a valid regular expression: "
                         f"{exc}; fix the pattern (escape special characters such as ( [ . * with a backslash)") \
            from None


def _text() -> Any:
    """A multiline text widget as ComfyUI's v3 nodes declare it (no dynamicPrompts option)."""
    return with_options(String("", multiline=True), drop=["dynamicPrompts"])


class StringSubstring(Node):
    """The part of a string from index start up to (not including) end; negative indices count from the end."""

    DISPLAY_NAME = "Substring"
    CATEGORY = _CATEGORY
    # ComfyUI states no default for start and end (the editor starts at 0, ours too).
    INPUTS = {"string": _text(), "start": with_options(Int(0, step=None), drop=["default"]),
              "end": with_options(Int(0, step=None), drop=["default"])}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, start: int, end: int):
        return (string[start:end],)


class StringLength(Node):
    """The number of characters in a string."""

    DISPLAY_NAME = "Length"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text()}
    OUTPUTS = (Output("INT", "length"),)

    def execute(self, ctx, string: str):
        return (len(string),)


_CASES = {"UPPERCASE": str.upper, "lowercase": str.lower, "Capitalize": str.capitalize, "Title Case": str.title}


class CaseConverter(Node):
    """Change a string's letter case."""

    DISPLAY_NAME = "Case Converter"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "mode": Combo(list(_CASES))}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, mode: str):
        return (_CASES[mode](string),)


_TRIMS = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}


class StringTrim(Node):
    """Remove whitespace from both ends of a string, or from one."""

    DISPLAY_NAME = "Trim"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "mode": Combo(list(_TRIMS))}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, mode: str):
        return (_TRIMS[mode](string),)


class StringReplace(Node):
    """Replace every occurrence of a text (plain text, not a pattern)."""

    DISPLAY_NAME = "Replace"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "find": _text(), "replace": _text()}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, find: str, replace: str):
        return (string.replace(find, replace),)


class StringContains(Node):
    """Whether a string contains a substring."""

    DISPLAY_NAME = "Contains"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "substring": _text(), "case_sensitive": Boolean(True)}
    OUTPUTS = (Output("BOOLEAN", "contains"),)

    def execute(self, ctx, string: str, substring: str, case_sensitive: bool):
        if not case_sensitive:
            string, substring = string.lower(), substring.lower()
        return (substring in string,)


class StringCompare(Node):
    """Whether string_a starts with, ends with or equals string_b."""

    DISPLAY_NAME = "Compare"
    CATEGORY = _CATEGORY
    INPUTS = {"string_a": _text(), "string_b": _text(), "mode": Combo(["Starts With", "Ends With", "Equal"]),
              "case_sensitive": Boolean(True)}
    OUTPUTS = (Output("BOOLEAN"),)

    def execute(self, ctx, string_a: str, string_b: str, mode: str, case_sensitive: bool):
        a, b = (string_a, string_b) if case_sensitive else (string_a.lower(), string_b.lower())
        if mode == "Starts With":
            return (a.startswith(b),)
        if mode == "Ends With":
            return (a.endswith(b),)
        return (a == b,)


_REGEX_FLAGS = {"case_insensitive": Boolean(True), "multiline": Boolean(False), "dotall": Boolean(False)}


class RegexMatch(Node):
    """Whether a regular expression matches anywhere in a string."""

    DISPLAY_NAME = "Regex Match"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "regex_pattern": _text(), **_REGEX_FLAGS}
    OUTPUTS = (Output("BOOLEAN", "matches"),)

    def execute(self, ctx, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool):
        pattern = compile_pattern("RegexMatch", regex_pattern, string, _flags(case_insensitive, multiline, dotall))
        return (pattern.search(string) is not None,)


class RegexExtract(Node):
    """Text a regular expression finds: the first match, all matches, or one group of the first or every match
    (several results are joined with newlines)."""

    DISPLAY_NAME = "Regex Extract"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "regex_pattern": _text(),
              "mode": Combo(["First Match", "All Matches", "First Group", "All Groups"]), **_REGEX_FLAGS,
              "group_index": Int(1, min=0, max=100, step=None)}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
                dotall: bool, group_index: int):
        pattern = compile_pattern("RegexExtract", regex_pattern, string, _flags(case_insensitive, multiline, dotall))
        if mode == "First Match":
            match = pattern.search(string)
            return (match.group(0) if match else "",)
        if mode == "All Matches":
            found = pattern.findall(string)
            return ("\n".join(m[0] if isinstance(m, tuple) else m for m in found),)
        matches = [pattern.search(string)] if mode == "First Group" else list(pattern.finditer(string))
        groups = [m.group(group_index) or "" for m in matches
                  if m is not None and m.groups() and len(m.groups()) >= group_index]
        return ("\n".join(groups),)


class RegexReplace(Node):
    """Replace what a regular expression matches (``\\1`` in the replacement inserts group 1)."""

    DISPLAY_NAME = "Regex Replace"
    CATEGORY = _CATEGORY
    INPUTS = {"string": _text(), "regex_pattern": _text(), "replace": _text(),
              "case_insensitive": Boolean(True, optional=True), "multiline": Boolean(False, optional=True),
              "dotall": Boolean(False, optional=True, tooltip="When enabled, the dot (.) character will match any "
                                "character including newline characters. When disabled, dots won't match newlines."),
              "count": Int(0, min=0, max=100, step=None, optional=True,
                           tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences "
                                   "(default). Set to 1 to replace only the first match, 2 for the first two "
                                   "matches, etc.")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
                multiline: bool = False, dotall: bool = False, count: int = 0):
        pattern = compile_pattern("RegexReplace", regex_pattern, string, _flags(case_insensitive, multiline, dotall))
        try:
            return (pattern.sub(replace, string, count=count),)
        except (re.error, IndexError) as exc:
            raise ValueError(f"RegexReplace: input 'replace' {replace[:80]!r} is not a valid replacement: {exc}; "
                             "refer only to groups the pattern has (\\1 … or \\g<name>) and write \\\\ for a "
                             "backslash") from None


class JsonExtractString(Node):
    """The value of one top-level key of a JSON object, as text ("" when the text is not JSON or lacks the key)."""

    DISPLAY_NAME = "Extract Text from JSON"
    CATEGORY = "text"
    INPUTS = {"json_string": _text(), "key": String("")}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, json_string: str, key: str):
        try:
            data = json.loads(json_string)
        except (ValueError, TypeError, RecursionError):
            return ("",)
        if not isinstance(data, dict) or data.get(key) is None:
            return ("",)
        return (str(data[key]),)


def _dump(node: str, value: Any, indent: int) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent or None)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{node}: the input is not JSON data ({exc}); connect a dictionary or list of strings, "
                         "numbers, booleans and nulls") from None


_INDENT = Int(2, min=0, max=8, step=None, tooltip="Spaces per indent level. 0 produces compact single-line string.")


class ConvertDictionaryToString(Node):
    """A dictionary as JSON text."""

    DISPLAY_NAME = "Convert Dictionary to String"
    CATEGORY = "text"
    INPUTS = {"dictionary": Link("DICT"), "indent": _INDENT}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, dictionary: Any, indent: int = 2):
        return (_dump("ConvertDictionaryToString", dictionary, indent),)


class ConvertArrayToString(Node):
    """A list as JSON text."""

    DISPLAY_NAME = "Convert Array to String"
    CATEGORY = "text"
    INPUTS = {"array": Link("ARRAY"), "indent": _INDENT}
    OUTPUTS = (Output("STRING"),)

    def execute(self, ctx, array: Any, indent: int = 2):
        return (_dump("ConvertArrayToString", array, indent),)


@hookimpl
def nodegraph_types():
    """DICT and ARRAY, ComfyUI's JSON-like values."""
    return {"DICT": "a dictionary of JSON-like values (ComfyUI's DICT)",
            "ARRAY": "a list of JSON-like values (ComfyUI's ARRAY)"}


@hookimpl
def nodegraph_nodes():
    """The string, regex and JSON nodes."""
    return [StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace, StringContains, StringCompare,
            RegexMatch, RegexExtract, RegexReplace, JsonExtractString, ConvertDictionaryToString, ConvertArrayToString]
