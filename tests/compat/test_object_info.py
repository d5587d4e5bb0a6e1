"""Our /object_info entries against ComfyUI's, transcribed from its source into comfyui_object_info/<Class>.json."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import pytest

from nodegraph.models.inputs import ModelComboInput
from nodegraph.registry import BUILTIN_PACKS
from nodegraph.testing import build_registry

FIXTURES = Path(__file__).with_name("comfyui_object_info")
KEYS = ("input", "input_order", "output", "output_is_list", "output_name", "name", "display_name", "category",
        "output_node")
#: Differences we keep on purpose: (class, input, option) → why; ``(class, "", field)`` for a field of the entry
#: itself (display_name). The reference is ComfyUI v0.8.0 (see comfyui_scope.json) unless a fixture says otherwise.
ALLOWED = {
    ("ImageColorToMask", "color", "display"): "our INT widget has no 'display' option; the editor shows a number",
    ("EmptyImage", "color", "display"): "our INT widget has no 'display' option; the editor shows a number",
    # Display names our packs took from ComfyUI's newer releases (v0.29.0 shows the same names); the class
    # name, the key of every workflow, is unchanged.
    ("EmptyImage", "", "display_name"): "ComfyUI's newer name 'Empty Image' (v0.8.0 showed the class name)",
    ("ConditioningAverage", "", "display_name"): "ComfyUI's newer name 'Conditioning (Average)'",
    # ComfyUI's primitives state no default (the editor then starts at 0 / 0.0 / "" / false, which is ours) and,
    # for PrimitiveFloat, integer bounds (sys.maxsize) that our FLOAT widget states as the same float.
    **{(cls, "value", "default"): "ours states the default the editor assumes when none is given"
       for cls in ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
                   "PrimitiveBoolean")},
    ("PrimitiveFloat", "value", "min"): "-sys.maxsize written as a float",
    ("PrimitiveFloat", "value", "max"): "sys.maxsize written as a float",
    ("PrimitiveStringMultiline", "value", "dynamicPrompts"): "ours states false, the editor's default",
    # SaveLoRA's optional steps (a number written into the file name) has no widget options in ComfyUI; our INT
    # widgets state their bounds and default.
    **{("SaveLoRA", "steps", opt): "our INT widget states its bounds and default (0: no step count in the name)"
       for opt in ("default", "min", "max", "step")},
}


def file_inputs(registry: Any, name: str) -> frozenset[str]:
    """Our node's inputs whose options are the files of a models folder (checkpoints, loras, configs, …)."""
    node = registry.nodes.get(name)
    specs = dict(getattr(node.cls, "INPUTS", {})) if node is not None else {}
    return frozenset(inp for inp, spec in specs.items() if isinstance(spec, ModelComboInput))


def _normalise(name: str, entry: dict[str, Any], files: frozenset[str] = frozenset(),
               allowed: Mapping[tuple[str, str, str], str] = ALLOWED) -> dict[str, Any]:
    """The compared keys, ComfyUI's equivalent spellings written one way, so that only real differences remain.

    - ``[TYPE]`` is ``[TYPE, {}]`` (ComfyUI sends a 1-tuple when there are no options); tooltips are not compared.
    - A v3 node's combo ``["COMBO", {"options": [...], "multiselect": false}]`` is the v1 ``[[...], {}]``; its
      ``"multiline": false`` on a STRING is the editor's default and dropped (as is a STRING's ``"default": ""``,
      the editor's own start); its ``display_name: null`` is the
      class name (what the editor shows, as for a v1 node with no display name).
    - The ``hidden`` group (prompt, extra_pnginfo, unique_id) is not compared: those are values the server hands
      a node, not sockets or widgets, and the editor shows nothing for them; our nodes get them from ``ctx``.
    - ``files``: combos listing a models folder (ckpt_name, vae_name, lora_name, config_name, …) compare as a
      combo with the same other options, not by their option list: the list is whatever files that folder holds
      (ComfyUI's fixtures were taken with empty folders; ours lists the embedded model).
    - ``allowed``: the deliberate differences to strip (test_scope.py passes none to count identical entries).
    """
    out = {key: entry.get(key) for key in KEYS}
    if out["display_name"] is None:
        out["display_name"] = out["name"]
    for (cls, inp, field) in allowed:  # a field of the entry we keep different on purpose
        if cls == name and inp == "":
            out[field] = None
    inputs: dict[str, Any] = {}
    for group, specs in (entry.get("input") or {}).items():
        if group == "hidden":
            continue
        inputs[group] = {}
        for input_name, spec in specs.items():
            opts = dict(spec[1]) if len(spec) > 1 else {}
            opts.pop("tooltip", None)
            for (cls, inp, opt) in allowed:  # stripped from both sides: a difference we keep on purpose
                if cls == name and inp == input_name:
                    opts.pop(opt, None)
            kind = spec[0]
            if kind == "COMBO" and "options" in opts:  # a v3 node's combo, written as a v1 one
                kind = list(opts.pop("options"))
            if opts.get("multiselect") is False:
                del opts["multiselect"]
            if kind == "STRING" and opts.get("multiline") is False:
                del opts["multiline"]
            if kind == "STRING" and opts.get("default") == "":  # the editor's own start for a text widget
                del opts["default"]
            if isinstance(kind, list) and "remote" in opts:  # the editor fetches these options from the route:
                kind = "COMBO"  # ComfyUI lists none, we list the current ones as a first view
            if isinstance(kind, list) and input_name in files:
                kind = "COMBO"  # the files of a models folder: compared as a combo, not by its listing
            inputs[group][input_name] = [kind, opts]
    out["input"] = inputs
    out["input_order"] = {group: names for group, names in (entry.get("input_order") or {}).items()
                          if group != "hidden"}
    return out


@pytest.fixture(scope="module")
def registry() -> Any:
    """The built-in packs' registry."""
    return build_registry(builtins=BUILTIN_PACKS)


@pytest.fixture(scope="module")
def catalogue(registry: Any) -> dict[str, Any]:
    """Our /object_info over the built-in packs."""
    return {path.stem: registry.catalogue_entry(path.stem) for path in sorted(FIXTURES.glob("*.json"))}


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_entry_matches_comfyui(fixture: Path, catalogue: dict[str, Any], registry: Any) -> None:
    """Every compared field equals ComfyUI's, except the differences listed in ALLOWED."""
    ours = catalogue[fixture.stem]
    assert ours is not None, f"{fixture.stem} is not in our catalogue"
    theirs = json.loads(fixture.read_text(encoding="utf-8"))
    files = file_inputs(registry, fixture.stem)
    assert _normalise(fixture.stem, ours, files) == _normalise(fixture.stem, theirs, files)


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


def test_normalise_reads_equivalent_spellings_only(registry: Any) -> None:
    """v3 combos, hidden inputs and models-folder listings compare as equal; their options and types still count."""
    v1 = {"name": "X", "display_name": None, "input": {"required": {"pick": [["a", "b"], {}], "ckpt_name": [["m"]]}},
          "input_order": {"required": ["pick", "ckpt_name"]}}
    v3 = {"name": "X", "display_name": "X",
          "input": {"required": {"pick": ["COMBO", {"options": ["a", "b"], "multiselect": False}],
                                 "ckpt_name": [[], {}]},
                    "hidden": {"prompt": ["PROMPT"]}},
          "input_order": {"required": ["pick", "ckpt_name"], "hidden": ["prompt"]}}
    files = frozenset({"ckpt_name"})
    assert _normalise("X", v1, files) == _normalise("X", v3, files)
    assert _normalise("X", v1) != _normalise("X", v3)  # a listing compares when the input is not a models folder
    v3["input"]["required"]["pick"][1]["options"] = ["b", "a"]
    assert _normalise("X", v1, files) != _normalise("X", v3, files)
    v3["input"]["required"]["pick"][1]["options"] = ["a", "b"]
    v3["input"]["required"]["ckpt_name"][1]["default"] = "m"
    assert _normalise("X", v1, files) != _normalise("X", v3, files)
    assert file_inputs(registry, "CheckpointLoader") == {"config_name", "ckpt_name"}
