"""Conversion of the editor's UI format (nodes and links arrays) to the API format, using the node catalogue.

Handles what the ComfyUI editor saves: positional ``widgets_values`` in catalogue widget order (with the extra
``control_after_generate`` value after seeds and the upload widget of image combos), widgets converted to inputs,
Reroute and PrimitiveNode pass-throughs, muted (mode 2) and bypassed (mode 4) nodes, and frontend-only notes.
"""

from __future__ import annotations

from typing import Any

from .inputs import ComboInput, IntInput
from .registry import Registry
from .workflow import WorkflowFormatError

MUTED, BYPASSED = 2, 4
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "PrimitiveString", "Label"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


class _Graph:
    """Index of a UI-format graph: nodes by id and links by id."""

    def __init__(self, data: dict[str, Any]) -> None:
        nodes = data.get("nodes") or []
        bad = next((n for n in nodes if not isinstance(n, dict) or not _is_id(n.get("id"))
                    or not isinstance(n.get("type", ""), str)), None)
        if bad is not None:
            raise WorkflowFormatError(f"the editor workflow's 'nodes' must be objects with an integer 'id' and a "
                                      f"string 'type'; got {str(bad)[:80]!r}")
        if any(n.get("type", "").count("-") == 4 for n in nodes) and \
                isinstance(data.get("definitions"), dict) and data["definitions"].get("subgraphs"):
            raise WorkflowFormatError("this workflow uses subgraphs, which `nodegraph run` cannot flatten yet; "
                                      "export it with 'Save (API Format)' from the editor")
        self.nodes: dict[int, dict[str, Any]] = {int(n["id"]): n for n in nodes}
        self.links: dict[int, tuple[int, int, int, int, str]] = {}
        for link in data.get("links") or []:
            try:
                if isinstance(link, dict):  # newer serialisation
                    link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                            link["target_slot"], link.get("type", "*")]
                self.links[int(link[0])] = (int(link[1]), int(link[2]), int(link[3]), int(link[4]), str(link[5]))
            except (KeyError, IndexError, TypeError, ValueError):
                raise WorkflowFormatError("the editor workflow's 'links' must be [id, origin_id, origin_slot, "
                                          f"target_id, target_slot, type]; got {str(link)[:80]!r}") from None

    def source(self, link_id: Any) -> tuple[int, int] | Any | None:
        """Follow a link through reroutes and bypassed nodes: (node id, slot), a PrimitiveNode's value, or None."""
        seen: set[int] = set()
        while _is_id(link_id) and int(link_id) in self.links and int(link_id) not in seen:
            seen.add(int(link_id))
            src_id, slot, _, _, link_type = self.links[int(link_id)]
            src = self.nodes.get(src_id)
            if src is None:
                return None
            kind, mode = src.get("type"), src.get("mode", 0)
            if kind == "Reroute":
                link_id = _dict((src.get("inputs") or [{}])[0]).get("link")
                continue
            if kind == "PrimitiveNode":
                values = src.get("widgets_values") or []
                return _Constant(values[0]) if isinstance(values, list) and values else None
            if mode == MUTED:
                return None
            if mode == BYPASSED:  # pass through the first input of the same type
                outputs = src.get("outputs") or []
                out_type = _dict(outputs[slot] if 0 <= slot < len(outputs) else {}).get("type", link_type)
                link_id = next((inp["link"] for inp in map(_dict, src.get("inputs") or [])
                                if inp.get("link") is not None and inp.get("type") in (out_type, "*")), None)
                continue
            return (src_id, slot)
        return None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Constant:
    """A value supplied by a PrimitiveNode."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _widget_values(node: dict[str, Any], definition: Any) -> dict[str, Any]:
    """Map positional widgets_values onto the catalogue's widget inputs."""
    values = node.get("widgets_values")
    if isinstance(values, dict):
        return {k: v for k, v in values.items() if k in definition.meta.inputs}
    values = list(values or [])
    out: dict[str, Any] = {}
    i = 0
    for name in definition.widget_names:
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        spec = definition.meta.inputs[name]
        if isinstance(spec, IntInput) and spec.control_after_generate and i < len(values) \
                and values[i] in CONTROL_VALUES:
            i += 1
        elif isinstance(spec, ComboInput) and spec.image_upload and i < len(values) and values[i] in ("image", None):
            i += 1
    return out


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


def _convert(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    graph = _Graph(data)
    api: dict[str, Any] = {}
    for node_id, node in sorted(graph.nodes.items()):
        kind, mode = node.get("type", ""), node.get("mode", 0)
        if kind in FRONTEND_ONLY or mode in (MUTED, BYPASSED):
            continue
        definition = registry.get(kind)
        inputs: dict[str, Any] = _widget_values(node, definition) if definition else {}
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            src = graph.source(inp["link"])
            if src is None:
                inputs.pop(inp["name"], None)  # muted upstream: the input is missing, as in ComfyUI
            elif isinstance(src, _Constant):
                inputs[inp["name"]] = src.value
            else:
                inputs[inp["name"]] = [str(src[0]), src[1]]
        entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
        meta: dict[str, Any] = {}
        if node.get("title"):
            meta["title"] = node["title"]
        version = (node.get("properties") or {}).get("nodegraph_version")
        if version:
            meta["version"] = version
        if meta:
            entry["_meta"] = meta
        api[str(node_id)] = entry
    if not api:
        raise WorkflowFormatError("the editor workflow has no runnable nodes (all muted, bypassed or notes)")
    return api
