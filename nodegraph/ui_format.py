"""Conversion of the editor's UI format (nodes and links arrays) to the API format, using the node catalogue.

Handles what the ComfyUI editor saves: positional ``widgets_values`` in catalogue widget order (the editor's extra
``control_after_generate`` slot always follows a seed-like INT, whatever type its saved value has, and image combos
carry an ``upload`` value), defaults for widgets older files lack, widgets converted to inputs, Reroute and
PrimitiveNode pass-throughs, muted (mode 2) and bypassed (mode 4) nodes, frontend-only notes, and group nodes and
subgraphs (flattened by ``nodegraph.ui_graph``).
"""

from __future__ import annotations

from typing import Any

from .dynamic_inputs import widget_slots_of
from .inputs import ComboInput, IntInput
from .registry import Registry
from .ui_graph import BYPASSED, MUTED, Constant, FlatGraph, Unbound
from .workflow import WorkflowFormatError

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label"}


def widget_slots(definition: Any) -> list[tuple[str | None, Any]]:
    """The positional slots of a node's widgets_values, in the editor's order: required widgets, then the upload
    value of a required image combo, then optional widgets; each is (input name, spec), or (None, "control") for the
    control_after_generate value that always follows a seed-like INT, or (None, "upload")."""
    slots: list[tuple[str | None, Any]] = []
    upload = False
    for optional in (False, True):
        if optional and upload:
            slots.append((None, "upload"))
        for name in definition.widget_names:
            spec = definition.meta.inputs[name]
            if bool(spec.optional) != optional:
                continue
            slots.append((name, spec))
            if isinstance(spec, IntInput) and spec.control_after_generate:
                slots.append((None, "control"))
            upload = upload or (isinstance(spec, ComboInput) and spec.image_upload and not optional)
    return slots


def widget_count(definition: Any) -> int:
    """How many widgets_values the editor saves for a node of this class."""
    return len(widget_slots(definition))


def _widget_values(node: dict[str, Any], definition: Any) -> dict[str, Any]:
    """Map positional widgets_values onto the catalogue's widget inputs; widgets without a saved value (older
    files) take their input's default, as the editor does."""
    values = node.get("widgets_values")
    out: dict[str, Any] = {}
    if isinstance(values, dict):
        out = {k: v for k, v in values.items() if k.split(".", 1)[0] in definition.meta.inputs}
    else:
        values = list(values or [])
        i = 0
        slots = widget_slots(definition)
        for at, (name, spec) in enumerate(slots, 1):  # a DynamicCombo's chosen option's widgets follow it
            if i >= len(values):
                break
            if name is None:
                if spec == "upload" and values[i] not in ("image", None):
                    continue  # an older file without the upload value
                i += 1
                continue
            out[name] = values[i]
            i += 1
            slots[at:at] = widget_slots_of(name, spec, out[name])
    for name in definition.widget_names:
        default = widget_default(definition.meta.inputs[name])
        if name not in out and default is not None:
            out[name] = default
        for sub, spec in widget_slots_of(name, definition.meta.inputs[name], out.get(name)):
            if sub not in out and widget_default(spec) is not None:
                out[sub] = widget_default(spec)
    return out


def widget_default(spec: Any) -> Any:
    """The value the editor gives a new widget: the input's default, else a fixed combo's first option, else None."""
    default = getattr(spec, "default", None)
    choices = getattr(spec, "choices", None)
    if default is None and isinstance(choices, tuple) and choices:
        return choices[0]
    return default


def ui_to_api(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """Convert an editor-saved workflow to API-format JSON (runnable by the engine); a malformed one raises
    WorkflowFormatError naming what is wrong."""
    try:
        return _convert(data, registry)
    except WorkflowFormatError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise WorkflowFormatError(f"the editor workflow is malformed ({type(exc).__name__}: {str(exc)[:120]}); "
                                  "re-save it from the editor or send the API format") from None


def _sort_key(node_id: str) -> tuple[int, ...]:
    return tuple(int(p) if p.lstrip("-").isdigit() else 0 for p in node_id.split(":"))


def _convert(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    def count(node: dict[str, Any]) -> int | None:
        definition = registry.get(node.get("type", ""))
        return widget_count(definition) if definition is not None else None

    graph = FlatGraph(data, count)
    api: dict[str, Any] = {}
    for node_id in sorted(graph.nodes, key=_sort_key):
        node = graph.nodes[node_id]
        kind, mode = node.get("type", ""), node.get("mode", 0)
        if kind in FRONTEND_ONLY or mode in (MUTED, BYPASSED):
            continue
        definition = registry.get(kind)
        inputs: dict[str, Any] = _widget_values(node, definition) if definition else {}
        inputs.update({k: v for k, v in graph.overrides.get(node_id, {}).items()
                       if definition is not None and k.split(".", 1)[0] in definition.meta.inputs})
        for inp in node.get("inputs") or []:
            if inp.get("link") is None or not isinstance(inp.get("name"), str):
                continue
            src = graph.source(inp["link"])
            if isinstance(src, Unbound):
                continue  # a subgraph input nothing feeds: the widget keeps its value
            if src is None:
                inputs.pop(inp["name"], None)  # muted upstream: the input is missing, as in ComfyUI
            elif isinstance(src, Constant):
                inputs[inp["name"]] = src.value
            else:
                inputs[inp["name"]] = [src[0], src[1]]
        entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
        meta: dict[str, Any] = {}
        if node.get("title"):
            meta["title"] = node["title"]
        version = (node.get("properties") or {}).get("nodegraph_version")
        if version:
            meta["version"] = version
        if meta:
            entry["_meta"] = meta
        api[node_id] = entry
    if not api:
        raise WorkflowFormatError("the editor workflow has no runnable nodes (all muted, bypassed or notes)")
    return api
