"""String, regex and JSON nodes (nodes/strings.py): ComfyUI's behaviour, and bad patterns refused clearly."""

from __future__ import annotations

import pytest

from nodegraph.nodes import strings as s


def run(cls, **inputs):
    """The single output of one node run without an engine."""
    (out,) = cls().execute(None, **inputs)
    return out


def test_substring_length_case_trim() -> None:
    assert run(s.StringSubstring, string="hello world", start=0, end=5) == "hello"
    assert run(s.StringSubstring, string="hello world", start=-5, end=11) == "world"
    assert run(s.StringLength, string="héllo") == 5
    assert [run(s.CaseConverter, string="hello wORLD", mode=m) for m in ("UPPERCASE", "lowercase", "Capitalize",
                                                                         "Title Case")] == \
        ["HELLO WORLD", "hello world", "Hello world", "Hello World"]
    assert [run(s.StringTrim, string="  x \n", mode=m) for m in ("Both", "Left", "Right")] == ["x", "x \n", "  x"]


def test_replace_contains_compare() -> None:
    assert run(s.StringReplace, string="a.b.c", find=".", replace="-") == "a-b-c"
    assert run(s.StringContains, string="Hello", substring="hell", case_sensitive=True) is False
    assert run(s.StringContains, string="Hello", substring="hell", case_sensitive=False) is True
    compare = {m: run(s.StringCompare, string_a="Portrait.png", string_b="portrait", mode=m, case_sensitive=False)
               for m in ("Starts With", "Ends With", "Equal")}
    assert compare == {"Starts With": True, "Ends With": False, "Equal": False}
    assert run(s.StringCompare, string_a="a", string_b="A", mode="Equal", case_sensitive=True) is False


def test_regex_match_and_extract() -> None:
    flags = {"case_insensitive": True, "multiline": False, "dotall": False}
    assert run(s.RegexMatch, string="Size: 1024x768", regex_pattern=r"\d+X\d+", **flags) is True
    assert run(s.RegexMatch, string="Size: 1024x768", regex_pattern=r"\d+X\d+", **{**flags,
                                                                                   "case_insensitive": False}) is False
    text, pat = "w=512 h=768 w=64 h=32", r"w=(\d+) h=(\d+)"
    out = {m: run(s.RegexExtract, string=text, regex_pattern=pat, mode=m, group_index=2, **flags)
           for m in ("First Match", "All Matches", "First Group", "All Groups")}
    # All Matches with groups gives each match's first group (ComfyUI's findall tuple [0])
    assert out == {"First Match": "w=512 h=768", "All Matches": "512\n64", "First Group": "768",
                   "All Groups": "768\n32"}
    assert run(s.RegexExtract, string=text, regex_pattern=pat, mode="First Group", group_index=3, **flags) == ""
    assert run(s.RegexExtract, string="none", regex_pattern=pat, mode="First Match", group_index=1, **flags) == ""
    # an optional group that did not take part gives "" (not None)
    assert run(s.RegexExtract, string="ab", regex_pattern="a(x)?b", mode="First Group", group_index=1, **flags) == ""


def test_regex_replace_defaults_and_count() -> None:
    assert run(s.RegexReplace, string="A1 b2 C3", regex_pattern=r"([a-z])(\d)", replace=r"\2\1") == "1A 2b 3C"
    assert run(s.RegexReplace, string="aaa", regex_pattern="A", replace="x", case_insensitive=True,
               count=2) == "xxa"
    assert run(s.RegexReplace, string="aaa", regex_pattern="A", replace="x", case_insensitive=False) == "aaa"


@pytest.mark.parametrize("pattern,needle", [("(unclosed", "not a valid regular expression"),
                                            ("a" * 1001, "the limit is 1,000")])
def test_bad_patterns_name_node_and_input(pattern: str, needle: str) -> None:
    for cls, extra in ((s.RegexMatch, {}), (s.RegexExtract, {"mode": "First Match", "group_index": 1}),
                       (s.RegexReplace, {"replace": ""})):
        with pytest.raises(ValueError, match=needle) as info:
            run(cls, string="x", regex_pattern=pattern, case_insensitive=True, multiline=False, dotall=False, **extra)
        assert cls.__name__ in str(info.value) and "regex_pattern" in str(info.value)


def test_long_text_and_bad_replacement_refused() -> None:
    with pytest.raises(ValueError, match="input 'string'"):
        run(s.RegexMatch, string="a" * (s.MAX_TEXT_CHARS + 1), regex_pattern="a", case_insensitive=False,
            multiline=False, dotall=False)
    with pytest.raises(ValueError, match="RegexReplace: input 'replace'"):
        run(s.RegexReplace, string="ab", regex_pattern="a", replace=r"\3")


def test_json_extract_string() -> None:
    doc = '{"prompt": "a cat", "n": 3, "none": null, "nested": {"k": 1}}'
    assert run(s.JsonExtractString, json_string=doc, key="prompt") == "a cat"
    assert run(s.JsonExtractString, json_string=doc, key="n") == "3"
    assert run(s.JsonExtractString, json_string=doc, key="none") == ""
    assert run(s.JsonExtractString, json_string=doc, key="missing") == ""
    assert run(s.JsonExtractString, json_string=doc, key="nested") == "{'k': 1}"  # str() of the value, as ComfyUI
    assert run(s.JsonExtractString, json_string="not json", key="a") == ""
    assert run(s.JsonExtractString, json_string="[1, 2]", key="a") == ""
    assert run(s.JsonExtractString, json_string="[" * 100_000, key="a") == ""  # too deep: no crash


def test_string_nodes_run_in_a_graph(nodegraph_config) -> None:
    from nodegraph.testing_graphs import capture_engine, run_captured

    engine = capture_engine(nodegraph_config)
    graph = {"1": {"class_type": "RegexReplace", "inputs": {"string": "cat, dog", "regex_pattern": r"(\w+)",
                                                           "replace": r"<\1>"}},
             "2": {"class_type": "CaseConverter", "inputs": {"string": ["1", 0], "mode": "UPPERCASE"}},
             "3": {"class_type": "StringLength", "inputs": {"string": ["2", 0]}},
             "4": {"class_type": "Capture", "inputs": {"value": ["2", 0]}},
             "5": {"class_type": "Capture", "inputs": {"value": ["3", 0]}}}
    _, values = run_captured(engine, graph)
    assert values["4"] == "<CAT>, <DOG>" and values["5"] == 12


def test_dictionary_and_array_to_string() -> None:
    assert run(s.ConvertDictionaryToString, dictionary={"é": [1, None]}, indent=0) == '{"é": [1, null]}'
    assert run(s.ConvertArrayToString, array=[1, "a"], indent=2) == '[\n  1,\n  "a"\n]'
    with pytest.raises(ValueError, match="ConvertArrayToString: the input is not JSON data"):
        run(s.ConvertArrayToString, array=[object()], indent=0)
