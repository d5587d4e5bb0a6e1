"""Node expansion (ComfyUI's ``{"result": ..., "expand": graph}``): plan the subgraph a node returns for splicing in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .dynamic_inputs import expand, has_dynamic
from .execution_lists import digest, own_key
from .inputs import ConstantError, types_compatible
from .node import NodeOutput
from .validation import PlannedNode
from .workflow import is_link

#: Most nodes one expansion may add (a runaway loop fails instead of eating memory).
MAX_EXPANDED_NODES = 10_000


class ExpansionError(ValueError):
    """The subgraph a node returned cannot run; the message names the node, input and fix."""


def expansion_of(out: Any) -> tuple[Any, dict[str, Any] | None, dict[str, Any] | None]:
    """Split what ``execute`` returned into (values, ui, subgraph or None); accepts NodeOutput or ComfyUI's dict."""
    if isinstance(out, NodeOutput):
        return out.values, out.ui, out.expand
    if isinstance(out, dict) and ("expand" in out or "result" in out):
        return out.get("result", ()), out.get("ui"), out.get("expand")
    return out, None, None


def plan_expansion(registry: Any, config: Any, parent: PlannedNode, parent_key: str, graph: Any,
                   outer: Mapping[str, PlannedNode],
                   outer_keys: Mapping[str, str]) -> tuple[list[PlannedNode], dict[str, str]]:
    """The expanded nodes in run order (ids ``"<parent>.<id>"``) and their cache keys.

    Links may point into the subgraph or at nodes of the running prompt; a link input may also take a plain value
    (what the expanding node computed). A key hashes the expanding node's key with
    the expanded node's own class, constants and the keys of its inputs, so identical expansions hit the cache.
    """
    name = f"node {parent.id} ({parent.definition.name})"
    if not isinstance(graph, dict) or not graph:
        raise ExpansionError(f"{name} returned an expansion that is not a non-empty dict of API-format nodes")
    if len(graph) > MAX_EXPANDED_NODES:
        raise ExpansionError(f"{name} expanded into {len(graph):,} nodes (at most {MAX_EXPANDED_NODES:,})")
    planned: dict[str, PlannedNode] = {}
    for sub_id, spec in graph.items():
        planned[f"{parent.id}.{sub_id}"] = _plan_node(registry, config, name, parent.id, str(sub_id), spec, graph,
                                                      outer)
    order = _topological(planned, name)
    keys: dict[str, str] = {}
    for nid in order:
        node = planned[nid]
        links = sorted((k, keys[src] if src in keys else outer_keys[src], idx) for k, (src, idx) in node.links.items())
        keys[nid] = digest((parent_key, own_key(node, config), links))
    return [planned[n] for n in order], keys


def _plan_node(registry: Any, config: Any, name: str, prefix: str, sub_id: str, spec: Any, graph: dict[str, Any],
               outer: Mapping[str, PlannedNode]) -> PlannedNode:
    where = f"{name} expanded node {sub_id!r}"
    if not isinstance(spec, dict) or not isinstance(spec.get("class_type"), str):
        raise ExpansionError(f"{where} has no class_type; give each node {{'class_type': ..., 'inputs': {{...}}}}")
    definition = registry.get(spec["class_type"])
    if definition is None:
        raise ExpansionError(f"{where}: node type {spec['class_type']!r} is not installed")
    inputs = spec.get("inputs") or {}
    constants: dict[str, Any] = {}
    links: dict[str, tuple[str, int]] = {}
    specs = definition.meta.inputs
    if has_dynamic(specs):  # grown and selected inputs (dotted names), as validation checks them
        def report(kind: str, message: str, fix: str, input_name: str, received: Any) -> None:
            raise ExpansionError(f"{where}: {message}; {fix}")
        specs = expand(specs, inputs, report)
    for input_name, ispec in specs.items():
        value = inputs.get(input_name)
        if value is None:
            if not ispec.optional:
                raise ExpansionError(f"{where}: required input {input_name!r} is missing; set or connect it")
            continue
        if is_link(value):
            src, idx = str(value[0]), int(value[1])
            if src in graph:
                source_def = registry.get((graph[src] or {}).get("class_type", "")) if isinstance(graph[src], dict) \
                    else None
                target = f"{prefix}.{src}"
            elif src in outer:
                source_def, target = outer[src].definition, src
            else:
                raise ExpansionError(f"{where}: input {input_name!r} links to {src!r}, which is neither in the "
                                     "expansion nor in the prompt")
            outs = source_def.meta.outputs if source_def is not None else ()
            if not 0 <= idx < len(outs) or not types_compatible(outs[idx].type, ispec.type):
                raise ExpansionError(f"{where}: input {input_name!r} ({ispec.type}) cannot take output {idx} of "
                                     f"{src!r}; link an output of type {ispec.type}")
            links[input_name] = (target, idx)
            continue
        if not ispec.is_widget:  # a value the expanding node computed (a tensor, a latent, …) goes in as is
            constants[input_name] = value
            continue
        try:
            constants[input_name] = ispec.coerce(value, config)
        except ConstantError as exc:
            raise ExpansionError(f"{where}: input {input_name!r}: {exc.message} ({exc.details})") from None
    return PlannedNode(f"{prefix}.{sub_id}", definition, constants, links)


def _topological(planned: dict[str, PlannedNode], name: str) -> list[str]:
    """Expanded nodes with each after its sources; raises on a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}
    for root in planned:
        stack = [(root, False)]
        while stack:
            nid, done = stack.pop()
            if done:
                state[nid] = 2
                order.append(nid)
                continue
            if state.get(nid) == 2:
                continue
            if state.get(nid) == 1:
                raise ExpansionError(f"{name} expanded into a cycle through {nid!r}; expansions must be acyclic")
            state[nid] = 1
            stack.append((nid, True))
            stack.extend((src, False) for src, _ in planned[nid].links.values()
                         if src in planned and state.get(src) != 2)
    return order


def resolve_result(values: Any, prefix: str, graph: dict[str, Any], results: Mapping[str, tuple[Any, ...]],
                   name: str) -> tuple[Any, ...]:
    """The expanding node's outputs: ``[id, index]`` references into the expansion replaced by their values."""
    out = []
    for value in tuple(values or ()):
        if is_link(value) and str(value[0]) in graph:
            vals = results[f"{prefix}.{value[0]}"]
            if not 0 <= int(value[1]) < len(vals):
                raise ExpansionError(f"{name}: result refers to output {value[1]} of expanded node {value[0]!r}, "
                                     f"which has {len(vals)} output(s)")
            out.append(vals[int(value[1])])
        else:
            out.append(value)
    return tuple(out)
