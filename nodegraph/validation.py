"""Validation of a whole workflow before anything runs; every problem is collected into one ComfyUI-shaped report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx

from .inputs import ConstantError, LinkInput, types_compatible
from .node import NodeDef
from .registry import Registry
from .workflow import Workflow, is_link, unwrap


@dataclass
class PlannedNode:
    """A validated node: its definition, coerced constants and links ``{input: (source_id, output_index)}``."""

    id: str
    definition: NodeDef
    constants: dict[str, Any]
    links: dict[str, tuple[str, int]]
    title: str | None = None


@dataclass
class ValidatedPrompt:
    """A workflow that passed validation: the nodes to run (outputs and their ancestors) in topological order."""

    nodes: dict[str, PlannedNode]
    outputs: list[str]
    order: list[str]
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class NodeError:
    """One problem at one node (ComfyUI's error shape)."""

    type: str
    message: str
    details: str = ""
    input_name: str | None = None
    received_value: Any = None
    input_config: Any = None

    def to_json(self) -> dict[str, Any]:
        """ComfyUI's ``{type, message, details, extra_info}``."""
        extra: dict[str, Any] = {}
        if self.input_name is not None:
            extra["input_name"] = self.input_name
            extra["input_config"] = self.input_config
            extra["received_value"] = _jsonable(self.received_value)
        return {"type": self.type, "message": self.message, "details": self.details, "extra_info": extra}


class ValidationReport(Exception):
    """Validation failed; ``to_json()`` is the body of ComfyUI's HTTP 400 answer."""

    def __init__(self, error: NodeError, node_errors: dict[str, dict[str, Any]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.node_errors = node_errors

    def to_json(self) -> dict[str, Any]:
        """``{"error": {...}, "node_errors": {...}}``."""
        return {"error": self.error.to_json(), "node_errors": self.node_errors}

    def count(self) -> int:
        """Number of individual problems."""
        return sum(len(v["errors"]) for v in self.node_errors.values()) or 1

    def render(self) -> str:
        """A person-readable report, one line per problem with its fix."""
        lines = [f"{self.count()} problem(s): {self.error.message}" if self.node_errors else self.error.message]
        if self.error.details and not self.node_errors:
            lines.append(f"  fix: {self.error.details}")
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                where = f"node {node_id} ({entry['class_type']})"
                name = err["extra_info"].get("input_name")
                if name:
                    where += f", input '{name}'"
                lines.append(f"- {where}: {err['message']}")
                if err["details"]:
                    lines.append(f"    fix: {err['details']}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _version_major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".", 1)[0]) if version else None
    except ValueError:
        return None


class Validator:
    """Checks a workflow against a registry; ``validate`` returns a ValidatedPrompt or raises ValidationReport."""

    def __init__(self, registry: Registry, config: Any = None) -> None:
        self.registry = registry
        self.config = config

    def validate(self, workflow: Workflow, targets: Iterable[str] | None = None) -> ValidatedPrompt:
        """Validate everything reachable from the output nodes (or ``targets``), collecting all problems."""
        targets = list(targets) if targets else None
        nodes = workflow.nodes()
        errors: dict[str, list[NodeError]] = {}
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        for nid, node in nodes.items():
            for value in node.inputs.values():
                if is_link(value) and str(value[0]) in nodes:
                    graph.add_edge(str(value[0]), nid)

        outputs = self._outputs(nodes, targets, errors)
        needed: set[str] = set(outputs)
        for out in outputs:
            needed |= nx.ancestors(graph, out)

        planned: dict[str, PlannedNode] = {}
        for nid in needed:
            node_errors = errors.setdefault(nid, [])
            result = self._check_node(nid, nodes, node_errors)
            if result is not None and not node_errors:
                planned[nid] = result

        order: list[str] = []
        sub = graph if len(needed) == len(nodes) else graph.subgraph(needed).copy()
        try:
            order = list(nx.topological_sort(sub))
        except nx.NetworkXUnfeasible:
            for cycle in _cycles(sub):
                names = " → ".join(f"{c} ({nodes[c].class_type})" for c in cycle + cycle[:1])
                for c in cycle:
                    errors.setdefault(c, []).append(NodeError(
                        "dependency_cycle", f"the graph has a cycle: {names}",
                        "remove one of the links in the cycle; a workflow must be a DAG"))

        node_errors = {nid: errs for nid, errs in errors.items() if errs}
        explicit = bool(targets)
        known_outputs = [o for o in outputs if o in planned and (explicit or planned[o].definition.meta.output_node)]
        if not known_outputs and not node_errors:
            raise ValidationReport(NodeError("prompt_no_outputs", "Prompt has no outputs",
                                             "add an output node such as SaveImage or PreviewImage"), {})
        if node_errors:
            raise ValidationReport(
                NodeError("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                          f"{sum(len(e) for e in node_errors.values())} problem(s) in {len(node_errors)} node(s)"),
                {nid: {"errors": [e.to_json() for e in errs],
                       "dependent_outputs": sorted(o for o in outputs if o == nid or nx.has_path(graph, nid, o)),
                       "class_type": nodes[nid].class_type}
                 for nid, errs in sorted(node_errors.items())})
        return ValidatedPrompt(nodes=planned, outputs=known_outputs, order=order, raw=workflow.source or workflow.to_json())

    # ---- pieces ----------------------------------------------------------------------------------------------------

    def _outputs(self, nodes: dict, targets: Iterable[str] | None, errors: dict[str, list[NodeError]]) -> list[str]:
        if targets:
            outs = []
            for t in map(str, targets):
                if t in nodes:
                    outs.append(t)
                else:
                    errors.setdefault(t, []).append(NodeError(
                        "invalid_target", f"execution target {t!r} is not a node of this workflow"))
            return outs
        # Unknown types count as needed, so that their error is reported even when they are outputs.
        return [nid for nid, node in nodes.items()
                if (d := self.registry.get(node.class_type)) is None or d.meta.output_node]

    def _check_node(self, nid: str, nodes: dict, errs: list[NodeError]) -> PlannedNode | None:
        node = nodes[nid]
        definition = self.registry.get(node.class_type)
        if definition is None:
            close = self.registry.suggest(node.class_type)
            errs.append(NodeError(
                "missing_node_type", f"node type {node.class_type!r} is not installed",
                f"did you mean {', '.join(close)}?" if close else
                "install the plugin that provides it (see `nodegraph plugins`) or remove the node"))
            return None
        inputs = dict(node.inputs)
        saved_major = _version_major(node.meta.version)
        if saved_major is not None and saved_major != definition.meta.major:
            migrated = definition.cls.migrate(node.meta.version or "", inputs) \
                if saved_major < definition.meta.major else None
            if migrated is None:
                errs.append(NodeError(
                    "node_version_mismatch",
                    f"saved with {node.class_type} {node.meta.version}, installed is {definition.meta.version}",
                    f"install {definition.plugin} with {node.class_type} {saved_major}.x, or re-create the node"))
                return None
            inputs = migrated
        constants: dict[str, Any] = {}
        links: dict[str, tuple[str, int]] = {}
        for name, spec in definition.meta.inputs.items():
            if name not in inputs or inputs[name] is None:
                if not spec.optional:
                    errs.append(NodeError("required_input_missing", f"required input '{name}' is missing",
                                          f"connect a {spec.type} output to '{name}'" if not spec.is_widget
                                          else f"set '{name}'", name, None, spec.catalogue_entry(self.config)))
                continue
            value = unwrap(inputs[name])
            if is_link(value):
                link = self._check_link(name, spec, (str(value[0]), value[1]), nodes, errs)
                if link:
                    links[name] = link
                continue
            try:
                constants[name] = spec.coerce(value, self.config)
            except ConstantError as exc:
                errs.append(NodeError(exc.kind, f"input '{name}': {exc.message}", exc.details, name, value,
                                      spec.catalogue_entry(self.config)))
        if not errs:
            for name, message in definition.cls.validate_inputs(self.config, **constants):
                errs.append(NodeError("custom_validation_failed", message, "", name, constants.get(name)))
        return PlannedNode(nid, definition, constants, links, node.meta.title)

    def _check_link(self, name: str, spec: Any, link: tuple[str, int], nodes: dict,
                    errs: list[NodeError]) -> tuple[str, int] | None:
        src_id, index = link
        src = nodes.get(src_id)
        if src is None:
            errs.append(NodeError("bad_linked_input", f"input '{name}' is linked to node {src_id!r}, which does "
                                  "not exist", "reconnect the input to an existing node", name, list(link)))
            return None
        src_def = self.registry.get(src.class_type)
        if src_def is None:
            return None  # the missing type is reported on that node
        outs = src_def.meta.outputs
        if not 0 <= index < len(outs):
            errs.append(NodeError("bad_linked_input", f"input '{name}' uses output {index} of node {src_id} "
                                  f"({src.class_type}), which has {len(outs)} output(s)",
                                  f"use an output index in 0..{len(outs) - 1}", name, list(link)))
            return None
        received = outs[index].type
        expected = spec.type if isinstance(spec, LinkInput) or spec.type != "COMBO" else "COMBO"
        if not types_compatible(received, expected):
            errs.append(NodeError("return_type_mismatch", f"input '{name}' expects {expected} but node {src_id} "
                                  f"({src.class_type}) output {index} is {received}",
                                  f"connect a {expected} output to '{name}'", name, list(link)))
            return None
        return link


def _cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each strongly connected component with more than one node (or a self-loop), as a list of node ids."""
    out = []
    for comp in nx.strongly_connected_components(graph):
        if len(comp) > 1 or any(graph.has_edge(n, n) for n in comp):
            try:
                out.append([u for u, _ in nx.find_cycle(graph.subgraph(comp))])
            except nx.NetworkXNoCycle:  # pragma: no cover
                out.append(sorted(comp))
    return out
