"""Issue #14's measure: ComfyUI core classes in scope, how many we have, how many have identical /object_info entries.

Run ``python -m pytest -q -s tests/compat/test_scope.py`` (or ``python tests/compat/test_scope.py``) to print the
report. The scope is comfyui_scope.json (ComfyUI's nodes.py and the listed comfy_extras modules at one commit);
"identical" means our entry equals the class's fixture in comfyui_object_info/ with no deliberate difference
stripped (only the equivalent spellings test_object_info._normalise reads as one: tooltips, v3 combos, hidden
inputs, models-folder listings).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from nodegraph.registry import BUILTIN_PACKS  # noqa: E402
from nodegraph.testing import build_registry  # noqa: E402
from tests.compat.test_object_info import FIXTURES, _normalise, file_inputs  # noqa: E402

SCOPE = Path(__file__).with_name("comfyui_scope.json")
#: Floors the measure may not fall below (raise them as classes are added; never lower them to pass).
MIN_HAVE = 171
MIN_IDENTICAL = 164


@dataclass
class Measure:
    """The counts of issue #14's section 3 and the class lists behind them."""

    in_scope: list[str]
    have: list[str]
    identical: list[str]
    allowed_only: list[str]  # equal once the deliberate differences in ALLOWED are stripped
    differing: list[str]  # differ even then (test_object_info fails on these)
    no_fixture: list[str]  # in scope, ours, no fixture yet
    lacking: dict[str, str] = field(default_factory=dict)  # in scope, not ours: class → module
    outside: dict[str, tuple[str, bool]] = field(default_factory=dict)  # ComfyUI's, out of scope, ours: → (module, fixture?)

    def report(self) -> str:
        """The measure as text: counts, then the lists."""
        lines = [f"ComfyUI core classes in scope: {len(self.in_scope)}; we have {len(self.have)}; "
                 f"identical /object_info entries: {len(self.identical)} "
                 f"(+{len(self.allowed_only)} equal but for deliberate differences, {len(self.differing)} differing, "
                 f"{len(self.no_fixture)} without a fixture)"]
        lines.append(f"in scope, lacking ({len(self.lacking)}): "
                     + ", ".join(f"{name} [{module}]" for name, module in sorted(self.lacking.items())))
        if self.allowed_only:
            lines.append("equal but for deliberate differences: " + ", ".join(self.allowed_only))
        if self.differing or self.no_fixture:
            lines.append(f"differing: {', '.join(self.differing) or '-'}; without a fixture: "
                         f"{', '.join(self.no_fixture) or '-'}")
        with_fixture = sorted(n for n, (_, has) in self.outside.items() if has)
        without = sorted(n for n, (_, has) in self.outside.items() if not has)
        lines.append(f"ComfyUI classes outside this scope that we have ({len(self.outside)}): with a fixture "
                     f"({len(with_fixture)}): {', '.join(with_fixture) or '-'}; without ({len(without)}): "
                     + (", ".join(f"{n} [{self.outside[n][0]}]" for n in without) or "-"))
        return "\n".join(lines)


def measure(registry: Any) -> Measure:
    """Compare our catalogue with the scope and the fixtures."""
    scope = json.loads(SCOPE.read_text(encoding="utf-8"))
    module_of = {name: module for module, names in scope["modules"].items() for name in names}
    in_scope = sorted(module_of)
    have = [name for name in in_scope if name in registry.nodes]
    identical, allowed_only, differing, no_fixture = [], [], [], []
    for name in have:
        path = FIXTURES / f"{name}.json"
        if not path.exists():
            no_fixture.append(name)
            continue
        theirs = json.loads(path.read_text(encoding="utf-8"))
        ours = registry.catalogue_entry(name)
        files = file_inputs(registry, name)
        if ours is not None and _normalise(name, ours, files, {}) == _normalise(name, theirs, files, {}):
            identical.append(name)
        elif ours is not None and _normalise(name, ours, files) == _normalise(name, theirs, files):
            allowed_only.append(name)
        else:
            differing.append(name)
    lacking = {name: module_of[name] for name in in_scope if name not in registry.nodes}
    outside = {name: (module, (FIXTURES / f"{name}.json").exists())
               for name, module in scope["other_comfyui_classes"].items() if name in registry.nodes}
    return Measure(in_scope, have, identical, allowed_only, differing, no_fixture, lacking, outside)


@pytest.fixture(scope="module")
def result() -> Measure:
    """The measure over the built-in packs."""
    return measure(build_registry(builtins=BUILTIN_PACKS))


def test_scope_measure(result: Measure) -> None:
    """Prints the counts; they stay at or above their floors, and no in-scope fixture differs from our entry (a class
    without a fixture yet is listed, not failed: transcribe ComfyUI's entry at the commit in comfyui_scope.json)."""
    print("\n" + result.report())
    assert len(result.in_scope) == 171, "comfyui_scope.json lists ComfyUI v0.8.0's 171 in-scope classes"
    assert len(result.have) >= MIN_HAVE, f"we have {len(result.have)} in-scope classes, fewer than {MIN_HAVE}"
    assert len(result.identical) >= MIN_IDENTICAL, (
        f"{len(result.identical)} identical entries, fewer than {MIN_IDENTICAL}: see test_object_info's failures")
    assert not result.differing, f"entries differing from their fixtures: {result.differing} (test_object_info)"


def test_measure_sees_a_difference() -> None:
    """The count is not vacuous: a class whose entry differs from its fixture is not counted identical."""
    registry = build_registry(builtins=BUILTIN_PACKS)
    before = measure(registry)
    assert "GrowMask" in before.identical
    entry = registry.nodes["GrowMask"]
    original = entry.catalogue_entry

    def changed(config: Any = None) -> dict[str, Any]:
        out = original(config)
        out["input"]["required"]["expand"][1]["max"] = 1
        return out

    object.__setattr__(entry, "catalogue_entry", changed)
    try:
        after = measure(registry)
    finally:
        object.__delattr__(entry, "catalogue_entry")
    assert "GrowMask" in after.differing and len(after.identical) == len(before.identical) - 1


if __name__ == "__main__":
    print(measure(build_registry(builtins=BUILTIN_PACKS)).report())
