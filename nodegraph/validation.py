"""Validation of a whole workflow before anything runs; every problem is collected into one ComfyUI-shaped report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .dynamic_inputs import expand, has_dynamic
from .inputs import ConstantError, LinkInput
from .known_classes import provider_of
from .limits import Limits, limits_of, pixel_problems
from .node import NodeDef
from .registry import Registry
from .validation_graph import ancestors, cycles, dependent_outputs
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


class ValidationCancelled(Exception):
    """Validation stopped early because its ``should_stop`` callback said so (the client went away)."""


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


#: Longest received string echoed back in a report.
ECHO_CHARS = 200
#: Nodes validated between two calls of ``should_stop``.
STOP_CHECK_EVERY = 64


def _jsonable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + f"… ({len(value):,} characters)"
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if depth > 8:
        return "…"
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value[:ECHO_CHARS]]
    if isinstance(value, dict):
        return {str(k)[:ECHO_CHARS]: _jsonable(v, depth + 1) for k, v in list(value.items())[:ECHO_CHARS]}
    return repr(value)[:ECHO_CHARS]


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:80] + "…"


def node_count_error(count: int, limits: Limits) -> ValidationReport | None:
    """The report for a prompt with more nodes than ``limits.max_nodes`` allows, or None."""
    if count <= limits.max_nodes:
        return None
    return ValidationReport(NodeError(
        "too_many_nodes", f"the prompt has {count:,} nodes; the limit is {limits.max_nodes:,} per prompt",
        "split the workflow into several prompts, or raise EngineConfig.limits.max_nodes"), {})


def _safe_entry(spec: Any, config: Any) -> Any:
    try:
        return spec.catalogue_entry(config)
    except Exception:  # noqa: BLE001 - a plugin's computed options failed; the error itself matters here
        return None


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

    @property
    def limits(self) -> Limits:
        """The caps this validator enforces (``config.limits``)."""
        return limits_of(self.config)

    def validate(self, workflow: Workflow, targets: Iterable[str] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> ValidatedPrompt:
        """Validate everything reachable from the output nodes (or ``targets``), collecting all problems.

        Linear in the size of the workflow; ``should_stop`` is polled every few hundred nodes and raises
        ValidationCancelled when it returns true.
        """
        targets = [str(t) for t in targets] if targets else None
        nodes = workflow.nodes()
        limits = self.limits
        too_many = node_count_error(len(nodes), limits)
        if too_many is not None:
            raise too_many
        missing = [t for t in targets or () if t not in nodes]
        if missing:
            raise ValidationReport(NodeError(
                "invalid_target", f"execution target(s) {', '.join(repr(_short(t)) for t in missing[:10])} are "
                "not nodes of this workflow", "name node ids of the prompt in partial_execution_targets"), {})
        errors: dict[str, list[NodeError]] = {}
        graph = nx.DiGraph()
        graph.add_nodes_from(nodes)
        for nid, node in nodes.items():
            for value in node.inputs.values():
                if is_link(value) and str(value[0]) in nodes:
                    graph.add_edge(str(value[0]), nid)

        outputs = self._outputs(nodes, targets, errors)
        needed = ancestors(graph, outputs)

        planned: dict[str, PlannedNode] = {}
        checker = _NodeChecker(self, nodes, limits)
        for count, nid in enumerate(n for n in nodes if n in needed):
            if count % STOP_CHECK_EVERY == 0:
                time.sleep(0)  # hand the GIL to waiting threads (the server's event loop) now and then
                if should_stop is not None and should_stop():
                    raise ValidationCancelled("validation stopped: the client went away")
            node_errors = errors.setdefault(nid, [])
            result = checker.check(nid, node_errors)
            if result is not None and not node_errors:
                planned[nid] = result

        order: list[str] = []
        sub = graph if len(needed) == len(nodes) else graph.subgraph(needed).copy()
        try:
            order = list(nx.topological_sort(sub))
        except nx.NetworkXUnfeasible:
            for cycle in cycles(sub):
                names = " → ".join(f"{c} ({nodes[c].class_type})" for c in cycle + cycle[:1])
                for c in cycle:
                    errors.setdefault(c, []).append(NodeError(
                        "dependency_cycle", f"the graph has a cycle: {names}",
                        "remove one of the links in the cycle; a workflow must be a DAG"))

        if order:
            for nid, name, message, fix in pixel_problems(
                    [(n, planned[n].definition.cls, planned[n].constants, [s for s, _ in planned[n].links.values()])
                     for n in order if n in planned], limits):
                errors.setdefault(nid, []).append(NodeError("image_too_large", message, fix, name,
                                                            planned[nid].constants.get(name)))

        node_errors = {nid: errs for nid, errs in errors.items() if errs}
        explicit = bool(targets)
        known_outputs = [o for o in outputs if o in planned and (explicit or planned[o].definition.meta.output_node)]
        if not known_outputs and not node_errors:
            raise ValidationReport(NodeError("prompt_no_outputs", "Prompt has no outputs",
                                             "add an output node such as SaveImage or PreviewImage"), {})
        if node_errors:
            dependent = dependent_outputs(graph, outputs, node_errors)
            raise ValidationReport(
                NodeError("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                          f"{sum(len(e) for e in node_errors.values())} problem(s) in {len(node_errors)} node(s)"),
                {nid: {"errors": [e.to_json() for e in errs], "dependent_outputs": dependent[nid],
                       "class_type": nodes[nid].class_type}
                 for nid, errs in sorted(node_errors.items())})
        return ValidatedPrompt(nodes=planned, outputs=known_outputs, order=order, raw=workflow.source or workflow.to_json())

    # ---- pieces ----------------------------------------------------------------------------------------------------

    def _outputs(self, nodes: dict, targets: Iterable[str] | None, errors: dict[str, list[NodeError]]) -> list[str]:
        if targets:
            return list(dict.fromkeys(t for t in targets if t in nodes))
        # Unknown types count as needed, so that their error is reported even when they are outputs.
        return [nid for nid, node in nodes.items()
                if (d := self.registry.get(node.class_type)) is None or d.meta.output_node]


class _NodeChecker:
    """Checks nodes one by one for one validation: suggestions once per unknown type, a prompt-wide string budget."""

    def __init__(self, validator: Validator, nodes: dict, limits: Limits) -> None:
        self.registry, self.config, self.nodes, self.limits = validator.registry, validator.config, nodes, limits
        self.suggestions: dict[str, list[str]] = {}
        self.string_chars = 0
        self.strings_reported = False

    def suggest(self, class_type: str) -> list[str]:
        """Close names for an unknown type, computed once per distinct type (and for at most max_suggestions)."""
        if class_type not in self.suggestions:
            if len(self.suggestions) >= self.limits.max_suggestions or len(class_type) > 200:
                return []
            self.suggestions[class_type] = self.registry.suggest(class_type)
        return self.suggestions[class_type]

    def check(self, nid: str, errs: list[NodeError]) -> PlannedNode | None:
        """The planned node, appending its problems to ``errs``."""
        node = self.nodes[nid]
        definition = self.registry.get(node.class_type)
        if definition is None:
            close = self.suggest(node.class_type)
            provider = provider_of(node.class_type)
            errs.append(NodeError(
                "missing_node_type", f"node type {_short(node.class_type)!r} is not installed"
                + (f"; it comes from {provider}" if provider else ""),
                f"did you mean {', '.join(close)}?" if close and not provider else
                "install the plugin that provides it (see `nodegraph plugins`) or remove the node"))
            return None
        inputs = dict(node.inputs)
        saved_major = _version_major(node.meta.version)
        if saved_major is not None and saved_major != definition.meta.major:
            migrated = self._plugin_call(definition, "migrate", errs, node.meta.version or "", inputs) \
                if saved_major < definition.meta.major else None
            if migrated is None or not isinstance(migrated, dict):
                if not errs:
                    errs.append(NodeError(
                        "node_version_mismatch",
                        f"saved with {node.class_type} {node.meta.version}, installed is {definition.meta.version}",
                        f"install {definition.plugin} with {node.class_type} {saved_major}.x, or re-create the node"))
                return None
            inputs = migrated
        constants: dict[str, Any] = {}
        links: dict[str, tuple[str, int]] = {}
        specs = definition.meta.inputs
        if has_dynamic(specs):  # grown and selected inputs (dotted names) are checked like the others
            specs = expand(specs, {k: unwrap(v) for k, v in inputs.items()},
                           lambda kind, message, fix, name, got: errs.append(NodeError(kind, message, fix, name, got)))
        for name, spec in specs.items():
            if name not in inputs or inputs[name] is None:
                if not spec.optional:
                    errs.append(NodeError("required_input_missing", f"required input '{name}' is missing",
                                          f"connect a {spec.type} output to '{name}'" if not spec.is_widget
                                          else f"set '{name}'", name, None, _safe_entry(spec, self.config)))
                continue
            value = unwrap(inputs[name])
            if is_link(value):
                link = self._check_link(name, spec, (str(value[0]), value[1]), errs)
                if link:
                    links[name] = link
                continue
            if isinstance(value, str) and not self._string_fits(name, value, errs):
                continue
            try:
                constants[name] = spec.coerce(value, self.config)
            except ConstantError as exc:
                errs.append(NodeError(exc.kind, f"input '{name}': {exc.message}", exc.details, name, value,
                                      _safe_entry(spec, self.config)))
            except Exception as exc:  # noqa: BLE001 - a plugin's input type failed: reported on the node
                errs.append(NodeError("invalid_input", f"input '{name}': checking the value failed: "
                                      f"{type(exc).__name__}: {_short(str(exc))}",
                                      f"change the value, or report this to the {definition.plugin} plugin",
                                      name, value))
        if not errs:
            for name, message in self._plugin_call(definition, "validate_inputs", errs, self.config, **constants) \
                    or ():
                errs.append(NodeError("custom_validation_failed", str(message), "", str(name),
                                      constants.get(name)))
        return PlannedNode(nid, definition, constants, links, node.meta.title)

    def _string_fits(self, name: str, value: str, errs: list[NodeError]) -> bool:
        """Check one string input against the per-input and per-prompt caps."""
        limits = self.limits
        if len(value) > limits.max_string_chars:
            errs.append(NodeError("string_too_long", f"input '{name}' is {len(value):,} characters; the limit "
                                  f"is {limits.max_string_chars:,} per input",
                                  "shorten the text, or raise EngineConfig.limits.max_string_chars", name, value))
            return False
        self.string_chars += len(value)
        if self.string_chars > limits.max_prompt_string_chars and not self.strings_reported:
            errs.append(NodeError("prompt_strings_too_long", f"input '{name}' brings the prompt's text to "
                                  f"{self.string_chars:,} characters; the limit is "
                                  f"{limits.max_prompt_string_chars:,} per prompt",
                                  "shorten the texts, split the prompt, or raise "
                                  "EngineConfig.limits.max_prompt_string_chars", name, value))
            self.strings_reported = True
            return False
        return True

    @staticmethod
    def _plugin_call(definition: Any, method: str, errs: list[NodeError], /, *args: Any, **kwargs: Any) -> Any:
        """Call a node class hook (validate_inputs, migrate); an exception becomes this node's error."""
        try:
            result = getattr(definition.cls, method)(*args, **kwargs)
            return list(result) if method == "validate_inputs" and result is not None else result
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of plugin code is the node's error
            errs.append(NodeError("custom_validation_failed",
                                  f"{definition.name}.{method}() raised {type(exc).__name__}: {_short(str(exc))}",
                                  f"this is a bug in the {definition.plugin} plugin; report it, or change the "
                                  "node's inputs"))
            return None

    def _check_link(self, name: str, spec: Any, link: tuple[str, int], errs: list[NodeError]) -> tuple[str, int] | None:
        src_id, index = link
        src = self.nodes.get(src_id)
        if src is None:
            errs.append(NodeError("bad_linked_input", f"input '{name}' is linked to node {_short(src_id)!r}, which "
                                  "does not exist", "reconnect the input to an existing node", name, list(link)))
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
        if not self.registry.types_compatible(received, expected):  # plugins' nodegraph_types subtypes too
            errs.append(NodeError("return_type_mismatch", f"input '{name}' expects {expected} but node {src_id} "
                                  f"({src.class_type}) output {index} is {received}",
                                  f"connect a {expected} output to '{name}'", name, list(link)))
            return None
        return link
