"""A flattened view of an editor-format (UI) workflow: group nodes and subgraphs expanded, links resolved.

Group nodes (``workflow/NAME`` or ``workflow>NAME``, defined in ``extra.groupNodes``) and subgraph instances (a node
whose type is the id of an entry of ``definitions.subgraphs``) are replaced by their inner nodes, whose ids are the
instance's id and the inner id joined by ``:`` (``"37:8"``, nested ``"10:4:2"``), as ComfyUI's own API form names
them. ``FlatGraph.source`` follows a link through reroutes, bypassed nodes, instance boundaries and PrimitiveNodes.
"""

from __future__ import annotations

from typing import Any

from .workflow import WorkflowFormatError

MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20
GROUP_PREFIXES = ("workflow/", "workflow>")
MAX_DEPTH = 16
#: At most this many nodes after expansion, whatever the limits: a small file of nested instances must not explode.
MAX_FLAT_NODES = 100_000

# A link entry: ("out", node or instance id, slot) | ("alias", key) | ("const", value) | ("unbound",)
Link = tuple[Any, ...]
Key = tuple[Any, ...]


class Unbound:
    """A subgraph input that nothing feeds: the inner widget keeps its own value."""


UNBOUND = Unbound()


class Constant:
    """A value supplied by a PrimitiveNode or a subgraph instance's widget."""

    def __init__(self, value: Any) -> None:
        self.value = value


def is_id(value: Any) -> bool:
    """Whether ``value`` is a node or link id (an integer, or a string of digits)."""
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit()


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> int | None:
    """An integer node id (subgraph boundary nodes are negative), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _link_tuple(link: Any) -> tuple[Any, int, Any, int, str]:
    """(origin id, origin slot, target id, target slot, type) of an array or object link."""
    if isinstance(link, dict):
        return (link["origin_id"], int(link["origin_slot"]), link["target_id"], int(link["target_slot"]),
                str(link.get("type", "*")))
    return link[1], int(link[2]), link[3], int(link[4]), str(link[5]) if len(link) > 5 else "*"


def _link_id(link: Any) -> Any:
    return link["id"] if isinstance(link, dict) else link[0]


class FlatGraph:
    """Every runnable node of a UI workflow (group nodes and subgraphs expanded) and the links between them."""

    def __init__(self, data: dict[str, Any], widget_count: Any = None) -> None:
        #: ``widget_count(node) -> int | None``: how many widgets_values a node of a known class takes.
        self._widget_count = widget_count or (lambda node: None)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.links: dict[Key, Link] = {}
        self.outputs: dict[tuple[str, int], Key] = {}
        #: Widget values an instance's promoted widgets set on inner nodes: {flat node id: {widget: value}}.
        self.overrides: dict[str, dict[str, Any]] = {}
        self.groups = as_dict(as_dict(data.get("extra")).get("groupNodes"))
        subgraphs = as_dict(data.get("definitions")).get("subgraphs") or []
        self.subgraphs = {str(s.get("id")): s for s in subgraphs if isinstance(s, dict)}
        nodes = data.get("nodes") or []
        bad = next((n for n in nodes if not isinstance(n, dict) or not is_id(n.get("id"))
                    or not isinstance(n.get("type", ""), str)), None)
        if bad is not None:
            raise WorkflowFormatError(f"the editor workflow's 'nodes' must be objects with an integer 'id' and a "
                                      f"string 'type'; got {str(bad)[:80]!r}")
        self._budget = MAX_FLAT_NODES
        self._scope(nodes, data.get("links") or [], "", {}, 0)

    # ---- expansion -------------------------------------------------------------------------------------------

    def _scope(self, nodes: list[Any], links: list[Any], prefix: str, inputs: dict[int, Link], depth: int,
               mode: int = 0) -> None:
        """Add the nodes and links of one graph level; ``inputs`` binds a subgraph's input slots."""
        if depth > MAX_DEPTH:
            raise WorkflowFormatError(f"subgraphs or group nodes nest deeper than {MAX_DEPTH} levels (or contain "
                                      "themselves); flatten them in the editor")
        for link in links:
            try:
                origin, slot, target, target_slot, kind = _link_tuple(link)
                key = (prefix, int(_link_id(link)))
            except (KeyError, IndexError, TypeError, ValueError):
                raise WorkflowFormatError("the editor workflow's 'links' must be [id, origin_id, origin_slot, "
                                          f"target_id, target_slot, type]; got {str(link)[:80]!r}") from None
            if _number(target) == SUBGRAPH_OUTPUT:
                self.outputs[(prefix[:-1], target_slot)] = key
            if _number(origin) == SUBGRAPH_INPUT:
                self.links[key] = inputs.get(slot, ("unbound",))
                continue
            self.links[key] = ("out", f"{prefix}{origin}", slot)
        self._budget -= len(nodes)
        if self._budget < 0:
            raise WorkflowFormatError(f"the workflow's subgraphs and group nodes expand to more than "
                                      f"{MAX_FLAT_NODES} nodes; simplify it")
        for node in nodes:
            if not isinstance(node, dict):
                continue
            node_id = f"{prefix}{node['id']}"
            node_mode = mode if mode in (MUTED, BYPASSED) else node.get("mode", 0)
            kind = node.get("type", "")
            local = [dict(as_dict(i), link=(prefix, int(i["link"])) if is_id(as_dict(i).get("link")) else None)
                     for i in node.get("inputs") or []]
            if kind in self.subgraphs:
                self._subgraph(node, node_id, local, node_mode, depth)
            elif kind.startswith(GROUP_PREFIXES) and kind[9:] in self.groups:
                self._group(node, node_id, local, node_mode, depth)
            else:
                self.nodes[node_id] = dict(node, id=node_id, mode=node_mode, inputs=local)

    def _subgraph(self, node: dict[str, Any], node_id: str, local: list[dict[str, Any]], mode: int,
                  depth: int) -> None:
        definition = self.subgraphs[node["type"]]
        slots = [as_dict(s) for s in definition.get("inputs") or []]
        widget_slots = self._widget_slots(definition, slots)
        saved = node.get("widgets_values")
        values: list[Any] = saved if isinstance(saved, list) else []
        by_name = {i.get("name"): i for i in local}
        promoted = self._promoted(node, node_id, values)
        bindings: dict[int, Link] = {}
        for k, slot in enumerate(slots):
            name = str(slot.get("name"))
            outer = by_name.get(name)
            if outer is not None and outer.get("link") is not None:
                bindings[k] = ("alias", outer["link"])
            elif promoted is not None:
                if name in promoted:
                    bindings[k] = ("const", promoted[name])
            elif k in widget_slots and widget_slots.index(k) < len(values):
                bindings[k] = ("const", values[widget_slots.index(k)])
        self._scope(definition.get("nodes") or [], definition.get("links") or [], node_id + ":", bindings,
                    depth + 1, mode)

    def _promoted(self, node: dict[str, Any], node_id: str, values: list[Any]) -> dict[str, Any] | None:
        """Newer editors list an instance's promoted widgets in ``properties.proxyWidgets`` ([inner id, widget]
        pairs, ``-1`` for the subgraph's own inputs) with their values in ``widgets_values``: record the inner
        widgets' values as overrides and return the subgraph inputs' values (None without promoted widgets)."""
        proxies = as_dict(node.get("properties")).get("proxyWidgets")
        if not isinstance(proxies, list) or not proxies:
            return None
        own: dict[str, Any] = {}
        for pair, value in zip(proxies, values if len(values) == len(proxies) else []):
            if not isinstance(pair, list) or len(pair) < 2 or not isinstance(pair[1], str):
                continue
            if str(pair[0]) == "-1":
                own[pair[1]] = value
            else:
                self.overrides.setdefault(f"{node_id}:{pair[0]}", {})[pair[1]] = value
        return own

    @staticmethod
    def _widget_slots(definition: dict[str, Any], slots: list[dict[str, Any]]) -> list[int]:
        """Subgraph input slots that feed a widget inside: the instance shows them as widgets, in slot order."""
        nodes = {str(n.get("id")): n for n in definition.get("nodes") or [] if isinstance(n, dict)}
        widget = set()
        for link in definition.get("links") or []:
            try:
                origin, slot, target, target_slot, _ = _link_tuple(link)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            inputs = (nodes.get(str(target)) or {}).get("inputs") or []
            if _number(origin) == SUBGRAPH_INPUT and 0 <= target_slot < len(inputs) \
                    and as_dict(inputs[target_slot]).get("widget"):
                widget.add(slot)
        return sorted(k for k in widget if 0 <= k < len(slots))

    def _group(self, node: dict[str, Any], node_id: str, local: list[dict[str, Any]], mode: int,
               depth: int) -> None:
        definition = as_dict(self.groups[node["type"][9:]])
        inner = [as_dict(n) for n in definition.get("nodes") or []]
        internal: dict[tuple[int, int], Link] = {}
        linked_out: set[tuple[int, int]] = set()
        for link in definition.get("links") or []:
            src, src_slot, tgt, tgt_slot = link[0], int(link[1]), int(link[2]), int(link[3])
            if src is not None:
                internal[(tgt, tgt_slot)] = ("out", f"{node_id}:{src}", src_slot)
                linked_out.add((int(src), src_slot))
        external = {(int(as_dict(e[0]).get("index", e[0]) if isinstance(e[0], dict) else e[0]), int(e[1]))
                    for e in definition.get("external") or [] if isinstance(e, list) and len(e) >= 2}
        outer_inputs = [i for i in local if not i.get("widget")]
        values = list(node.get("widgets_values") or []) if isinstance(node.get("widgets_values"), list) else []
        n_in = n_out = 0
        for position, child in enumerate(inner):
            index = int(child.get("index", position))
            child_id = f"{node_id}:{index}"
            inputs = []
            for slot, inp in enumerate(child.get("inputs") or []):
                inp = dict(as_dict(inp), link=None)
                if (index, slot) in internal:
                    key = (child_id, "in", slot)
                    self.links[key] = internal[(index, slot)]
                    inp["link"] = key
                elif not inp.get("widget"):
                    if n_in < len(outer_inputs) and outer_inputs[n_in].get("link") is not None:
                        inp["link"] = outer_inputs[n_in]["link"]
                    n_in += 1
                inputs.append(inp)
            for slot, _ in enumerate(child.get("outputs") or []):
                if (index, slot) not in linked_out or (index, slot) in external:
                    key = (child_id, "out", slot)
                    self.links[key] = ("out", child_id, slot)
                    self.outputs[(node_id, n_out)] = key
                    n_out += 1
            child_values = child.get("widgets_values")
            count = self._widget_count(child)
            if count is None:
                count = len(child_values) if isinstance(child_values, list) else 0
            if isinstance(child_values, list) or count:
                child_values, values = values[:count], values[count:]
            flat = dict(child, id=child_id, mode=mode if mode in (MUTED, BYPASSED) else child.get("mode", 0),
                        inputs=inputs, widgets_values=child_values)
            if child.get("type", "").startswith(GROUP_PREFIXES) or child.get("type") in self.subgraphs:
                raise WorkflowFormatError(f"group node {node['type']!r} contains another group node or subgraph; "
                                          "convert it to nodes in the editor")
            self.nodes[child_id] = flat

    # ---- resolution ------------------------------------------------------------------------------------------

    def source(self, key: Key | None) -> tuple[str, int] | Constant | Unbound | None:
        """Follow a link through reroutes, bypassed nodes and instance boundaries: (node id, slot), a constant,
        UNBOUND for a subgraph input nothing feeds, or None when nothing (or a muted node) feeds it."""
        seen: set[Key] = set()
        while key is not None and key not in seen:
            seen.add(key)
            link = self.links.get(key)
            if link is None:
                return None
            if link[0] == "alias":
                key = link[1]
                continue
            if link[0] == "const":
                return Constant(link[1])
            if link[0] == "unbound":
                return UNBOUND
            src_id, slot = link[1], link[2]
            if (src_id, slot) in self.outputs and src_id not in self.nodes:
                key = self.outputs[(src_id, slot)]
                continue
            src = self.nodes.get(src_id)
            if src is None:
                return None
            kind, mode = src.get("type"), src.get("mode", 0)
            if kind == "Reroute":
                key = as_dict((src.get("inputs") or [{}])[0]).get("link")
                continue
            if kind == "PrimitiveNode":
                values = src.get("widgets_values") or []
                return Constant(values[0]) if isinstance(values, list) and values else None
            if mode == MUTED:
                return None
            if mode == BYPASSED:
                key = self._bypass(src, slot)
                continue
            return (src_id, slot)
        return None

    @staticmethod
    def _bypass(node: dict[str, Any], slot: int) -> Key | None:
        """The input a bypassed node passes to output ``slot``: the same slot when its type matches, else the
        first linked input of that type."""
        outputs = node.get("outputs") or []
        out_type = as_dict(outputs[slot] if 0 <= slot < len(outputs) else {}).get("type", "*")
        inputs = [as_dict(i) for i in node.get("inputs") or []]
        matching = [i for i in inputs if i.get("link") is not None
                    and (i.get("type") in (out_type, "*") or out_type == "*")]
        same = inputs[slot] if 0 <= slot < len(inputs) else None
        if same is not None and same in matching:
            return same["link"]
        return matching[0]["link"] if matching else None
