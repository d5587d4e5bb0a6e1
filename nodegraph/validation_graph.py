"""Graph walks validation needs, each linear in the size of the workflow graph."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

#: Most dependent outputs listed per failing node (the full lists would make a report quadratic in size).
MAX_DEPENDENT_OUTPUTS = 100


def ancestors(graph: nx.DiGraph, outputs: list[str]) -> set[str]:
    """The outputs and every node they depend on, in one reverse walk."""
    seen, stack = set(outputs), list(outputs)
    while stack:
        for pred in graph.predecessors(stack.pop()):
            if pred not in seen:
                seen.add(pred)
                stack.append(pred)
    return seen


def dependent_outputs(graph: nx.DiGraph, outputs: list[str], failing: Iterable[str]) -> dict[str, list[str]]:
    """For each failing node, the outputs that depend on it (itself included), in one pass over the graph:
    each strongly connected component carries a bit mask of the outputs reachable from it."""
    condensed = nx.condensation(graph)
    member = condensed.graph["mapping"]
    bit = {o: i for i, o in enumerate(outputs)}
    masks: dict[int, int] = {}
    for comp in reversed(list(nx.topological_sort(condensed))):
        mask = 0
        for nid in condensed.nodes[comp]["members"]:
            if nid in bit:
                mask |= 1 << bit[nid]
        for succ in condensed.successors(comp):
            mask |= masks[succ]
        masks[comp] = mask
    result = {}
    for nid in failing:
        mask, found = masks.get(member.get(nid, -1), 0), []
        while mask and len(found) < MAX_DEPENDENT_OUTPUTS:
            low = mask & -mask
            found.append(outputs[low.bit_length() - 1])
            mask ^= low
        result[nid] = sorted(found)
    return result


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Each strongly connected component with more than one node (or a self-loop), as a list of node ids."""
    out = []
    for comp in nx.strongly_connected_components(graph):
        if len(comp) > 1 or any(graph.has_edge(n, n) for n in comp):
            try:
                out.append([u for u, _ in nx.find_cycle(graph.subgraph(comp))])
            except nx.NetworkXNoCycle:  # pragma: no cover
                out.append(sorted(comp))
    return out
