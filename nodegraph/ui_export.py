"""Conversion of API-format workflows to the editor's UI format (nodes and links arrays), using the node catalogue.

The inverse of ``nodegraph.ui_format.ui_to_api``: nodes are laid out left to right by topological depth,
``widgets_values`` follow the catalogue's widget order (with the editor's extra ``control_after_generate`` value
after seeds and the upload value after image combos), and a widget fed by a link becomes a converted input.
Dynamic inputs (dotted names) become what the editor shows: an Autogrow's grown inputs are slots ``images.image0``,
…, and a DynamicCombo's chosen option's widgets follow the combo's value, its links being slots.
Round trip: ``ui_to_api(api_to_ui(api, registry), registry) == api`` when every widget has a value.
"""

from __future__ import annotations

from typing import Any

from .dynamic_inputs import AutogrowInput, DynamicComboInput, widget_slots_of
from .inputs import InputSpec, StringInput
from .registry import Registry
from .ui_format import widget_slots
from .workflow import WorkflowFormatError, is_link, is_ui_format

NARROW, WIDE, GAP_X, GAP_Y, LEFT, TOP = 220, 300, 60, 60, 80, 110
TITLE_H, SLOT_H, WIDGET_H, MULTILINE_H, IMAGE_H = 30, 22, 26, 90, 260
DEFAULT_CONTROL = "fixed"
UPLOAD_VALUE = "image"


def _numeric_ids(api: dict[str, Any]) -> dict[str, int]:
    """API node ids → integer UI ids (numeric ids are kept; others get fresh numbers after the largest)."""
    ids: dict[str, int] = {}
    for nid in api:
        text = str(nid)
        if text.isdigit() and str(int(text)) == text:
            ids[text] = int(text)
    top = max(ids.values(), default=0)
    for nid in api:
        if str(nid) not in ids:
            top += 1
            ids[str(nid)] = top
    return ids


def _depths(api: dict[str, Any]) -> dict[str, int]:
    """Longest distance from a node without linked inputs (its layout column); refuses cycles."""
    parents = {nid: [str(v[0]) for v in (node.get("inputs") or {}).values() if is_link(v) and str(v[0]) in api]
               for nid, node in api.items()}
    depth: dict[str, int] = {}
    for start in api:
        stack: list[tuple[str, bool]] = [(start, False)]
        visiting: set[str] = set()
        while stack:
            nid, done = stack.pop()
            if nid in depth:
                continue
            if done:
                visiting.discard(nid)
                depth[nid] = 1 + max((depth[p] for p in parents[nid]), default=-1)
                continue
            if nid in visiting:
                raise WorkflowFormatError(f"node {nid} is part of a cycle; a workflow must be acyclic")
            visiting.add(nid)
            stack.append((nid, True))
            stack.extend((p, False) for p in parents[nid] if p not in depth)
    return depth


def _placeholder(spec: InputSpec) -> Any:
    """The value a widget shows when a link feeds it (the editor still saves one)."""
    default = getattr(spec, "default", None)
    return default if default is not None else ""


def _widgets(node: dict[str, Any], definition: Any) -> list[Any]:
    """Positional widgets_values in catalogue order, with the editor's extra values; trailing gaps dropped."""
    inputs = node.get("inputs") or {}
    values: list[Any] = []
    kept = 0
    slots = widget_slots(definition)  # the editor's order, shared with the conversion
    for at, (name, spec) in enumerate(slots, 1):
        if name is None:
            values.append(DEFAULT_CONTROL if spec == "control" else UPLOAD_VALUE)
            continue
        given = name in inputs and not is_link(inputs[name])
        values.append(inputs[name] if given else _placeholder(spec))
        if name in inputs:
            kept = len(values)
        slots[at:at] = widget_slots_of(name, spec, values[-1])  # a DynamicCombo's option widgets follow it
    return values[:kept]


def _grown_slots(name: str, spec: AutogrowInput, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """An Autogrow's slots as the editor shows them: its names up to the last given one, at least ``min``, and
    one free slot to grow into (while under the cap)."""
    names = spec.slot_names()
    given = [i for i, s in enumerate(names) if f"{name}.{s}" in inputs]
    count = min(len(names), max((given[-1] + 2) if given else 1, spec.min))
    return [{"name": f"{name}.{s}", "type": spec.template.type, "link": None} for s in names[:count]]


def _input_slots(definition: Any, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's input slots: link inputs, widgets fed by a link (converted), grown inputs and the links of a
    DynamicCombo's chosen option (right after the combo's own slot position)."""
    slots: list[dict[str, Any]] = []

    def add(name: str, spec: InputSpec) -> None:
        if not spec.is_widget:
            slots.append({"name": name, "type": spec.type, "link": None})
        elif is_link(inputs.get(name)):
            slots.append({"name": name, "type": spec.type, "link": None, "widget": {"name": name}})

    for name, spec in definition.meta.inputs.items():
        if isinstance(spec, AutogrowInput):
            slots.extend(_grown_slots(name, spec, inputs))
            continue
        add(name, spec)
        if isinstance(spec, DynamicComboInput):
            choice = inputs.get(name, spec.default)
            for sub, sub_spec in spec.inputs_of(choice if isinstance(choice, str) else "").items():
                add(f"{name}.{sub}", sub_spec)
    return slots


def _size(definition: Any, slots: int, outputs: int) -> list[int]:
    """A node size the editor draws comfortably: narrow without widgets, taller for text boxes and images."""
    specs = [definition.meta.inputs[n] for n in definition.widget_names] if definition else []
    tall = sum(MULTILINE_H for s in specs if isinstance(s, StringInput) and s.multiline)
    image = IMAGE_H if definition is not None and definition.meta.output_node and not definition.meta.outputs else 0
    width = WIDE if specs or image else NARROW
    return [width, TITLE_H + SLOT_H * max(slots, outputs, 1) + WIDGET_H * len(specs) + tall + image]


def api_to_ui(api: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """Convert API-format JSON to the editor's UI format (version 0.4), laid out left to right."""
    if is_ui_format(api):
        return api
    if not isinstance(api, dict) or not api:
        raise WorkflowFormatError("an API-format workflow is a non-empty JSON object {node_id: {class_type, inputs}}")
    api = {str(k): v for k, v in api.items()}
    ids = _numeric_ids(api)
    depth = _depths(api)
    order = sorted(api, key=lambda nid: (depth[nid], ids[nid]))
    nodes: dict[str, dict[str, Any]] = {}
    links: list[list[Any]] = []
    for nid in order:
        node = api[nid]
        kind = node.get("class_type", "")
        definition = registry.get(kind)
        inputs = node.get("inputs") or {}
        slots: list[dict[str, Any]] = []
        if definition is not None:
            slots = _input_slots(definition, inputs)
            outputs = [{"name": o.display_name, "type": o.type, "links": [], "slot_index": i}
                       for i, o in enumerate(definition.meta.outputs)]
            widgets = _widgets(node, definition)
        else:  # unknown node: keep its links and constants so the editor can show it as missing
            slots = [{"name": k, "type": "*", "link": None} for k, v in inputs.items() if is_link(v)]
            outputs = []
            widgets = [v for v in inputs.values() if not is_link(v)]
        for slot in slots:
            value = inputs.get(slot["name"])
            if not is_link(value):
                continue
            src_id = str(value[0])
            if src_id not in nodes:
                raise WorkflowFormatError(f"node {nid} ({kind}): input {slot['name']!r} links to node {src_id}, "
                                          "which the workflow does not contain")
            src, index = nodes[src_id], int(value[1])
            while len(src["outputs"]) <= index:  # unknown source node: grow its outputs as links need them
                src["outputs"].append({"name": "*", "type": "*", "links": [], "slot_index": len(src["outputs"])})
            link_type = src["outputs"][index]["type"]
            link_id = len(links) + 1
            links.append([link_id, src["id"], index, ids[nid], slots.index(slot), link_type])
            src["outputs"][index]["links"].append(link_id)
            slot["link"] = link_id
        meta = node.get("_meta") or {}
        properties: dict[str, Any] = {"Node name for S&R": kind}
        if meta.get("version"):
            properties["nodegraph_version"] = meta["version"]
        entry: dict[str, Any] = {
            "id": ids[nid], "type": kind, "pos": [0, 0],
            "size": _size(definition, len(slots), len(outputs)),
            "flags": {}, "order": len(nodes), "mode": 0, "inputs": slots, "outputs": outputs,
            "properties": properties, "widgets_values": widgets,
        }
        if meta.get("title"):
            entry["title"] = meta["title"]
        nodes[nid] = entry
    _layout(nodes, depth, api)
    return {"last_node_id": max(ids.values()), "last_link_id": len(links),
            "nodes": [nodes[nid] for nid in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def _layout(nodes: dict[str, dict[str, Any]], depth: dict[str, int], api: dict[str, Any]) -> None:
    """Place columns by depth; within a column, order nodes by the rows of what feeds them."""
    row: dict[str, float] = {}
    x = LEFT
    for column in range(max(depth.values()) + 1):
        members = [nid for nid in nodes if depth[nid] == column]

        def parent_rows(nid: str) -> float:
            feeds = [row[str(v[0])] for v in (api[nid].get("inputs") or {}).values()
                     if is_link(v) and str(v[0]) in row]
            return sum(feeds) / len(feeds) if feeds else 0.0
        members.sort(key=lambda nid: (parent_rows(nid), nodes[nid]["id"]))
        y = TOP
        for i, nid in enumerate(members):
            row[nid] = i
            nodes[nid]["pos"] = [x, y]
            y += nodes[nid]["size"][1] + GAP_Y
        x += max((nodes[nid]["size"][0] for nid in members), default=0) + GAP_X
