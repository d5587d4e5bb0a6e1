"""Our /object_info entries against ComfyUI's, transcribed from its source into comfyui_object_info/<Class>.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodegraph.registry import BUILTIN_PACKS
from nodegraph.testing import build_registry

FIXTURES = Path(__file__).with_name("comfyui_object_info")
KEYS = ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name", "category",
        "output_node")
#: Differences we keep on purpose: (class, input, option) → why.
ALLOWED = {
    ("ImageColorToMask", "color", "display"): "our INT widget has no 'display' option; the editor shows a number",
    # ComfyUI's primitives state no default (the editor then starts at 0 / 0.0 / "" / false, which is ours) and,
    # for PrimitiveFloat, integer bounds (sys.maxsize) that our FLOAT widget states as the same float.
    **{(cls, "value", "default"): "ours states the default the editor assumes when none is given"
       for cls in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                   "PrimitiveBoolean")},
    ("PrimitiveInt", "value", "step"): "ours states step 1, the editor's default for an INT",
    ("PrimitiveFloat", "value", "min"): "-sys.maxsize written as a float",
    ("PrimitiveFloat", "value", "max"): "sys.maxsize written as a float",
    ("PrimitiveStringMultiline", "value", "dynamicPrompts"): "ours states false, the editor's default",
}


def _normalise(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The compared keys, with ``[TYPE]`` written as ``[TYPE, {}]`` (ComfyUI sends a 1-tuple when no options)."""
    out = {key: entry.get(key) for key in KEYS}
    inputs: dict[str, Any] = {}
    for group, specs in (entry.get("input") or {}).items():
        inputs[group] = {}
        for input_name, spec in specs.items():
            opts = dict(spec[1]) if len(spec) > 1 else {}
            opts.pop("tooltip", None)
            for (cls, inp, opt) in ALLOWED:  # stripped from both sides: a difference we keep on purpose
                if cls == name and inp == input_name:
                    opts.pop(opt, None)
            kind = spec[0]
            if isinstance(kind, list) and "remote" in opts:  # the editor fetches these options from the route:
                kind = "COMBO"  # ComfyUI lists none, we list the current ones as a first view
            inputs[group][input_name] = [kind, opts]
    out["input"] = inputs
    return out


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    """Our /object_info over the built-in packs."""
    registry = build_registry(builtins=BUILTIN_PACKS)
    return {path.stem: registry.catalogue_entry(path.stem) for path in sorted(FIXTURES.glob("*.json"))}


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_entry_matches_comfyui(fixture: Path, catalogue: dict[str, Any]) -> None:
    """Every compared field equals ComfyUI's, except the differences listed in ALLOWED."""
    ours = catalogue[fixture.stem]
    assert ours is not None, f"{fixture.stem} is not in our catalogue"
    theirs = json.loads(fixture.read_text(encoding="utf-8"))
    assert _normalise(fixture.stem, ours) == _normalise(fixture.stem, theirs)


def test_comparison_sees_a_changed_option(catalogue: dict[str, Any]) -> None:
    """The comparison is not vacuous: a fixture with one changed default, option or display name differs."""
    theirs = json.loads((FIXTURES / "GrowMask.json").read_text(encoding="utf-8"))
    ours = _normalise("GrowMask", catalogue["GrowMask"])
    assert ours == _normalise("GrowMask", theirs)
    theirs["input"]["required"]["expand"][1]["min"] = 0
    assert ours != _normalise("GrowMask", theirs)
    theirs = json.loads((FIXTURES / "ImageToMask.json").read_text(encoding="utf-8"))
    theirs["input"]["required"]["channel"][0] = ["red", "green", "blue"]
    assert _normalise("ImageToMask", catalogue["ImageToMask"]) != _normalise("ImageToMask", theirs)
