"""How many of ComfyUI's official workflow templates use only node classes we have.

A template counts as covered when every node class it uses — in its top-level graph and inside its subgraph
definitions — is in our catalogue; subgraph instances (their type is a subgraph id) and the editor's own nodes
(Note, MarkdownNote, Reroute, PrimitiveNode, …) are not classes. The templates come from the
``comfyui-workflow-templates`` packages (MIT); "non-API" templates are those whose file name does not start with
``api_`` (index files excluded). Run ``python tests/compat/template_coverage.py`` for the numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Node types that only the editor knows (no server class).
EDITOR_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label"})


def templates_folder() -> Path | None:
    """The installed templates folder (comfyui-workflow-templates' JSON package), or None when not installed."""
    try:
        import comfyui_workflow_templates_json as package  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = Path(package.__file__).with_name("templates")
    return folder if folder.is_dir() else None


def non_api_templates(folder: Path) -> list[Path]:
    """The editor-format templates that are not API-node templates, sorted by name."""
    return sorted(p for p in folder.glob("*.json")
                  if not p.name.startswith(("api_", "index")))


def _graphs(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The top-level graph and every subgraph definition (nested ones too)."""
    stack = [data]
    while stack:
        graph = stack.pop()
        yield graph
        stack.extend(sg for sg in (graph.get("definitions") or {}).get("subgraphs") or [] if isinstance(sg, dict))


def template_classes(data: Any) -> set[str]:
    """The node classes a saved editor workflow uses (subgraph contents included; subgraph ids and editor-only
    nodes left out)."""
    if not isinstance(data, dict):
        return set()
    graphs = list(_graphs(data))
    subgraph_ids = {g.get("id") for g in graphs[1:]}
    classes: set[str] = set()
    for graph in graphs:
        for node in graph.get("nodes") or []:
            kind = node.get("type") if isinstance(node, dict) else None
            if isinstance(kind, str) and kind not in subgraph_ids and kind not in EDITOR_ONLY:
                classes.add(kind)
    return classes


@dataclass
class Coverage:
    """Templates counted, those fully covered, and for each missing class how many templates need it."""

    total: int = 0
    covered: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    uncovered: list[str] = field(default_factory=list)

    def summary(self, top: int = 25) -> str:
        """A short text report: covered/total and the most needed missing classes."""
        lines = [f"{self.covered}/{self.total} templates have every node class known"]
        lines += [f"  {count:4d}  {name}" for name, count in self.missing.most_common(top)]
        return "\n".join(lines)


def coverage(paths: Iterable[Path], known: Iterable[str]) -> Coverage:
    """Coverage of the templates at ``paths`` by the class names ``known``."""
    known = set(known)
    result = Coverage()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "nodes" not in data:
            continue
        result.total += 1
        missing = template_classes(data) - known
        result.missing.update(missing)
        if missing:
            result.uncovered.append(path.stem)
        else:
            result.covered += 1
    return result


def our_classes() -> set[str]:
    """The class names of the built-in packs' catalogue."""
    from nodegraph.registry import BUILTIN_PACKS
    from nodegraph.testing import build_registry

    return set(build_registry(builtins=BUILTIN_PACKS).nodes)


if __name__ == "__main__":
    import sys

    folder = templates_folder()
    if folder is None:
        sys.exit("comfyui-workflow-templates is not installed")
    drop = set(sys.argv[1:])  # class names to leave out, to measure "before" a change
    print(coverage(non_api_templates(folder), our_classes() - drop).summary())
