"""Dynamic inputs in the Python API, read from ``/object_info`` entries (so they work against any server).

ComfyUI v3's ``Autogrow`` and ``DynamicCombo`` inputs take dotted names in the API format (``images.image0``,
``resize_type.width``). A node call may give them dotted (``**{"images.image0": x}``) or nested:
``images={"image0": x, "image1": y}`` (or a list, ``images=[x, y]``, filling the names in order, or one value for
the first name) and
``resize_type={"resize_type": "scale by multiplier", "multiplier": 2.0}`` (or just the choice,
``resize_type="scale by multiplier"``); ``flatten`` turns the nested forms into the dotted one, ``expand`` gives the
specs the node has with those inputs (the chosen option's inputs, the grown ones), checked like any other input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .catalogue import GraphBuildError

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"

#: ``{input name: (type or option list, options, required)}``, as ``catalogue.input_specs`` gives it.
Specs = dict[str, tuple[Any, dict[str, Any], bool]]


def has_dynamic(specs: Specs) -> bool:
    """Whether any input of these specs is dynamic (Autogrow, DynamicCombo or MatchType)."""
    return any(kind in (AUTOGROW, DYNAMIC_COMBO, MATCH_TYPE) for kind, _, _ in specs.values())


def grown_names(opts: Mapping[str, Any]) -> list[str]:
    """The names an Autogrow may grow to, in order (``image0`` … ``image49``, or its listed names)."""
    template = opts.get("template") or {}
    if template.get("prefix") is not None:
        return [f"{template['prefix']}{i}" for i in range(int(template.get("max", 10)))]
    return [str(n) for n in template.get("names") or ()]


def template_spec(opts: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(type, options) of an Autogrow's template input."""
    groups = (opts.get("template") or {}).get("input") or {}
    for section in ("required", "optional"):
        for spec in (groups.get(section) or {}).values():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            return kind, dict(spec[1]) if isinstance(spec, (list, tuple)) and len(spec) > 1 else {}
    return "*", {}


def _option_inputs(opts: Mapping[str, Any], choice: Any) -> Specs:
    """The inputs a DynamicCombo's option ``choice`` brings."""
    out: Specs = {}
    for option in opts.get("options") or ():
        if option.get("key") == choice:
            for section, required in (("required", True), ("optional", False)):
                for name, spec in ((option.get("inputs") or {}).get(section) or {}).items():
                    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
                    sub = dict(spec[1]) if isinstance(spec, (list, tuple)) and len(spec) > 1 else {}
                    out[name] = (kind, sub, required)
    return out


def _keys(opts: Mapping[str, Any]) -> list[str]:
    return [str(o.get("key")) for o in opts.get("options") or ()]


def flatten(class_type: str, specs: Specs, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with nested Autogrow and DynamicCombo values spelled the API's dotted way."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in out:
            raise GraphBuildError(f"{class_type}: input {key!r} is given twice (nested and dotted); give it once")
        out[key] = value

    for name, value in inputs.items():
        kind = specs[name][0] if name in specs else None
        if kind == AUTOGROW and isinstance(value, Mapping):
            for sub, item in value.items():
                put(f"{name}.{sub}", item)
        elif kind == AUTOGROW and isinstance(value, list):
            names = grown_names(specs[name][1])
            if len(value) > len(names):
                raise GraphBuildError(f"{class_type}.{name} takes at most {len(names)} inputs, got {len(value)}")
            for sub, item in zip(names, value, strict=False):
                put(f"{name}.{sub}", item)
        elif kind == AUTOGROW and value is not None:  # one value: the group's first input
            put(f"{name}.{grown_names(specs[name][1])[0]}", value)
        elif kind == DYNAMIC_COMBO and isinstance(value, Mapping):
            if name not in value:
                raise GraphBuildError(f"{class_type}.{name}: the nested form names its choice under {name!r}: "
                                      f"{name}={{{name!r}: {_keys(specs[name][1])[0]!r}, ...}}")
            put(name, value[name])
            for sub, item in value.items():
                if sub != name:
                    put(f"{name}.{sub}", item)
        else:
            put(name, value)
    return out


def expand(class_type: str, specs: Specs, inputs: Mapping[str, Any]) -> Specs:
    """The specs a node has with these (flattened) inputs: grown inputs typed by their template, a DynamicCombo
    as a combo of its option keys followed by its chosen (or first) option's inputs, a MatchType as its allowed
    types; a grown or option name the node does not have raises GraphBuildError naming what it has."""
    out: Specs = {}
    for name, (kind, opts, required) in specs.items():
        if kind == AUTOGROW:
            names = grown_names(opts)
            given = [n for n in names if f"{name}.{n}" in inputs]
            stray = [k for k in inputs if k.startswith(name + ".") and k[len(name) + 1:] not in names]
            if stray:
                raise GraphBuildError(f"{class_type} has no input {stray[0]!r}; the group {name!r} takes "
                                      f"{name}.{names[0]} … {name}.{names[-1]}")
            needed = min(int((opts.get("template") or {}).get("min", 1)), 1)
            if required and len(given) < needed:
                raise GraphBuildError(f"{class_type}.{name} needs at least {needed} input: pass {name}=[...] or "
                                      f"{name}={{{names[0]!r}: ...}}")
            template = template_spec(opts)
            out.update({f"{name}.{n}": (*template, False) for n in given})
        elif kind == DYNAMIC_COMBO:
            keys = _keys(opts)
            choice = inputs.get(name, keys[0] if keys else None)
            out[name] = (keys, {k: v for k, v in opts.items() if k != "options"}, required)
            option = _option_inputs(opts, choice)
            stray = [k for k in inputs if k.startswith(name + ".") and k[len(name) + 1:] not in option]
            if stray:
                raise GraphBuildError(f"{class_type} has no input {stray[0]!r} when {name}={choice!r}; that "
                                      f"option takes {', '.join(option) or 'no inputs'}")
            out.update({f"{name}.{sub}": spec for sub, spec in option.items()})
        elif kind == MATCH_TYPE:
            allowed = (opts.get("template") or {}).get("allowed_types", "*")
            out[name] = (str(allowed), {k: v for k, v in opts.items() if k != "template"}, required)
        else:
            out[name] = (kind, opts, required)
    return out
