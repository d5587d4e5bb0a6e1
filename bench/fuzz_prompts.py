"""Hypothesis strategies for workflows sent to POST /prompt: runnable graphs of cheap nodes, graphs of any
catalogue node with hostile inputs (heavy nodes always miss an input, so they never run), editor-format workflows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from fuzz_values import deep_json, hostile_json, hostile_text

#: Nodes cheap enough to run whatever their inputs; any other class always misses a required input (no heavy runs).
CHEAP_NODES = frozenset({"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                         "PrimitiveBoolean", "IntMath", "FloatMath", "IntToFloat", "StringFormat",
                         "StringConcatenate", "RandomInt", "ShowValue", "ExampleGreeting", "ReverseText"})


def spec_value(spec: Any, link: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values an input spec of the catalogue accepts (``link`` for inputs that take another node's output)."""
    kind, opts = (spec + [{}])[:2] if isinstance(spec, list) and spec else (spec, {})
    opts = opts if isinstance(opts, dict) else {}
    if kind == "COMBO":
        kind = opts.get("options") or []
    if isinstance(kind, list):
        return st.sampled_from(kind) if kind else st.just("")
    if kind == "INT":
        return st.integers(int(opts.get("min", -(2**63))), int(opts.get("max", 2**63)))
    if kind == "FLOAT":
        return st.floats(float(opts.get("min", -1e300)), float(opts.get("max", 1e300)))
    if kind == "STRING":
        return st.text(max_size=30) | hostile_text()
    if kind == "BOOLEAN":
        return st.booleans()
    return link


def node_inputs(entry: dict[str, Any], ids: list[str], cheap: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Inputs for one node of the catalogue: values from the input specs, links, or hostile values."""
    inputs = entry.get("input", {})
    specs = {**inputs.get("required", {}), **inputs.get("optional", {})}
    link = st.builds(lambda i, s: [i, s], st.sampled_from(ids) | hostile_text(), st.integers(-1, 3) | hostile_json())
    fields = {}
    for name, spec in specs.items():
        value = spec_value(spec, link)
        fields[name] = st.one_of(value, value, value, link, hostile_json(), deep_json())
    required = list(inputs.get("required", {}))

    def drop(values: dict[str, Any], dropped: int) -> dict[str, Any]:
        if not cheap and required:  # a heavy node never runs: it always misses a required input
            values.pop(required[dropped % len(required)], None)
        return values
    return st.builds(drop, st.fixed_dictionaries({}, optional=fields), st.integers(0, 20))


def runnable_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A cheap node with in-spec values (now and then one hostile value) shown by ShowValue: graphs that run."""
    sources = sorted(c for c in CHEAP_NODES if c in catalogue and c != "ShowValue")

    @st.composite
    def graph(draw: Callable[..., Any]) -> dict[str, Any]:
        cls = draw(st.sampled_from(sources))
        required = catalogue[cls].get("input", {}).get("required", {})
        inputs = {name: draw(spec_value(spec, st.just(["9", 0]))) for name, spec in required.items()}
        if inputs and draw(st.integers(0, 3)) == 0:
            inputs[draw(st.sampled_from(sorted(inputs)))] = draw(hostile_json())
        return {"1": {"class_type": cls, "inputs": inputs},
                "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    return graph() if sources and "ShowValue" in catalogue else st.just({})


def prompt_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[Any]:
    """API-format graphs of catalogue nodes (cheap ones may run), UI-format and malformed graphs."""
    classes = sorted(c for c, e in catalogue.items()
                     if c in CHEAP_NODES or (e.get("input", {}).get("required")))

    @st.composite
    def graph(draw: Callable[..., Any]) -> dict[str, Any]:
        n = draw(st.integers(1, 4))
        ids = [str(i + 1) for i in range(n)] if draw(st.booleans()) else draw(
            st.lists(hostile_text(), min_size=1, max_size=4, unique=True))
        out: dict[str, Any] = {}
        for node_id in ids:
            cls = draw(st.sampled_from(classes) | hostile_text()) if classes else draw(hostile_text())
            entry = catalogue.get(cls, {})
            node: dict[str, Any] = {"class_type": cls,
                                    "inputs": draw(node_inputs(entry, ids, cls in CHEAP_NODES))}
            if draw(st.integers(0, 9)) == 0:
                node = draw(st.dictionaries(st.sampled_from(["class_type", "inputs", "_meta"]), hostile_json()))
            out[node_id] = node
        return out
    ui = st.fixed_dictionaries({"nodes": st.lists(hostile_json() | st.integers(), max_size=4)},
                               optional={"links": hostile_json(), "version": hostile_json()})
    runnable = runnable_graph(catalogue)
    return st.one_of(runnable, runnable, graph(), graph(), ui, editor_graph(catalogue), hostile_json(), deep_json())


def editor_graph(catalogue: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Editor (UI-format) workflows: nodes with ids, types, modes, widget values and input links, and links."""
    classes = sorted(CHEAP_NODES & set(catalogue)) or ["PrimitiveInt"]
    small = st.integers(-2, 6)
    node = st.fixed_dictionaries(
        {"id": small | hostile_json(), "type": st.sampled_from(classes) | hostile_text()},
        optional={"mode": st.sampled_from([0, 2, 4]) | hostile_json(),
                  "widgets_values": st.lists(hostile_json() | st.integers(-5, 5), max_size=4) | hostile_json(),
                  "inputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["value", "a", "b", "text"])},
                                                           optional={"link": small | hostile_json(),
                                                                     "type": st.sampled_from(["INT", "*"])}),
                                     max_size=3),
                  "outputs": st.lists(st.fixed_dictionaries({"links": st.lists(small, max_size=2) | st.none()}),
                                      max_size=2)})
    link = st.lists(small | hostile_json(), min_size=0, max_size=7)
    return st.fixed_dictionaries({"nodes": st.lists(node, max_size=4), "links": st.lists(link, max_size=3)},
                                 optional={"version": st.sampled_from([0.4, 1]), "extra": hostile_json(),
                                           "definitions": hostile_json()})
