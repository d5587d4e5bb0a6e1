"""Graph walks validation needs, each linear in the size of the workflow graph."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import networkx as nx

#: Most dependent outputs listed per failing node (the full lists would make a report quadratic in size).
MAX_DEPENDENT_OUTPUTS = 20


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
    """For each failing node, the outputs that depend on it (itself included; at most MAX_DEPENDENT_OUTPUTS), in one
    pass over the strongly connected components from the outputs back, each carrying a capped list."""
    condensed = nx.condensation(graph)
    member = condensed.graph["mapping"]
    is_output = set(outputs)
    reach: dict[int, dict[str, None]] = {}
    for comp in reversed(list(nx.topological_sort(condensed))):
        found = dict.fromkeys(sorted(n for n in condensed.nodes[comp]["members"] if n in is_output))
        for succ in condensed.successors(comp):
            for out in reach[succ]:
                if len(found) >= MAX_DEPENDENT_OUTPUTS:
                    break
                found[out] = None
        reach[comp] = dict(islice(found.items(), MAX_DEPENDENT_OUTPUTS))
    return {nid: sorted(reach.get(member.get(nid, -1), ())) for nid in failing}


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
