"""The node catalogue a Graph is checked against: ``/object_info`` entries, from a local registry or a server."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..inputs import types_compatible

#: Input types that take constants (a widget); every other declared type is fed by a link.
SCALAR_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


class GraphBuildError(TypeError):
    """A node call does not fit the catalogue (unknown node or input, wrong link type, bad constant)."""


class Catalogue:
    """Node entries in the shape of ComfyUI's ``GET /object_info``, looked up by class name."""

    def __init__(self, names: Iterable[str], entry: Callable[[str], dict[str, Any] | None],
                 compatible: Callable[[str, str], bool] = types_compatible) -> None:
        self._names = sorted(names)
        self._entry = entry
        self._entries: dict[str, dict[str, Any] | None] = {}
        self.compatible = compatible

    @classmethod
    def from_engine(cls, engine: Any) -> Catalogue:
        """The catalogue of an in-process Engine (its registry, plugins included)."""
        registry, config = engine.registry, engine.config
        return cls(registry.nodes, lambda name: registry.catalogue_entry(name, config), registry.types_compatible)

    @classmethod
    def from_object_info(cls, info: Mapping[str, Any]) -> Catalogue:
        """A catalogue from a ``GET /object_info`` answer (a server's)."""
        return cls(info, lambda name: info.get(name))

    @property
    def names(self) -> list[str]:
        """Every node class name, sorted."""
        return list(self._names)

    def entry(self, name: str) -> dict[str, Any] | None:
        """The ``/object_info`` entry of ``name`` (computed once), or None when unknown."""
        if name not in self._entries:
            self._entries[name] = self._entry(name)
        return self._entries[name]

    def require(self, name: str) -> dict[str, Any]:
        """The entry of ``name``; raise GraphBuildError with close matches when there is none."""
        entry = self.entry(name)
        if entry is None:
            lowered = {n.lower(): n for n in self._names}
            close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]
            hint = f"did you mean {', '.join(close)}?" if close else "run `nodegraph nodes` to list the nodes"
            raise GraphBuildError(f"unknown node {name!r}: {hint}")
        return entry


def input_specs(entry: Mapping[str, Any]) -> dict[str, tuple[Any, dict[str, Any], bool]]:
    """``{input name: (type or option list, options, required)}`` of a catalogue entry, in declaration order."""
    out: dict[str, tuple[Any, dict[str, Any], bool]] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (entry.get("input", {}).get(section) or {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            opts = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            out[name] = (kind, opts, required)
    return out


def combo_options(kind: Any, opts: Mapping[str, Any]) -> list[str] | None:
    """The options of a combo input (old list form or the newer ``COMBO`` + ``options``), else None."""
    if isinstance(kind, (list, tuple)):
        return [str(v) for v in kind]
    if kind == "COMBO":
        return [str(v) for v in opts.get("options", [])]
    return None


def check_constant(where: str, kind: Any, opts: Mapping[str, Any], value: Any) -> Any:
    """Check a constant against its declared type, range or options; returns it (ints given as floats kept)."""
    options = combo_options(kind, opts)
    if options is not None:
        if not isinstance(value, str) or (options and value not in options):
            shown = ", ".join(options[:12]) + (" …" if len(options) > 12 else "")
            fix = f"choose one of: {shown}" if options else "there are no options (is the folder empty?)"
            raise GraphBuildError(f"{where}: {value!r} is not among the options; {fix}")
        return value
    if kind not in SCALAR_TYPES:
        raise GraphBuildError(f"{where} takes a link to a {kind} output, not the constant {value!r}; pass the "
                              f"handle another node returned (e.g. model, clip, vae = g.CheckpointLoaderSimple(...))")
    if kind == "STRING":
        if not isinstance(value, str):
            raise GraphBuildError(f"{where} takes a string, got {type(value).__name__} {value!r}")
        return value
    if kind == "BOOLEAN":
        if not isinstance(value, bool):
            raise GraphBuildError(f"{where} takes True or False, got {value!r}")
        return value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "INT" and not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        numeric = False
    if not numeric:
        example = opts.get("default", 0)
        raise GraphBuildError(f"{where} takes {'an integer' if kind == 'INT' else 'a number'}, got "
                              f"{type(value).__name__} {value!r}; give a value such as {example!r}")
    low, high = opts.get("min"), opts.get("max")
    if low is not None and value < low:
        raise GraphBuildError(f"{where} = {value!r} is below the minimum {low}; use {low} or more")
    if high is not None and value > high:
        raise GraphBuildError(f"{where} = {value!r} is above the maximum {high}; use {high} or less")
    return value
