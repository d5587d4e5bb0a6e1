"""Subgraph blueprints: saved workflows used as nodes, in the editor and in headless API-format runs.

A blueprint is an editor workflow whose root holds one instance of a subgraph (``definitions.subgraphs``); the
subgraph's ``inputs`` and ``outputs`` are the node's exposed inputs and outputs. This is the file the editor's
"Publish subgraph" writes to the user's ``subgraphs/`` user-data folder, and the shape ComfyUI serves at
``/api/global_subgraphs``. Blueprints are looked for, first match wins, in:

1. ``HOME/user/default/subgraphs/`` (the editor's own; it lists them itself, so they are not "global"),
2. ``HOME/subgraphs/`` (the operator's),
3. a ``subgraphs/`` folder inside each plugin package,
4. the blueprints shipped with nodegraph (``nodegraph/subgraphs/``).

Headless, an API-format node ``{"class_type": "subgraph/NAME", "inputs": {...}}`` is expanded (``expand``) into the
blueprint's inner nodes before validation: given inputs feed the exposed inputs (a value, or a link
``[node, slot]``), inputs not given keep the blueprint's saved values, and links to the node's output ``k`` are
rewired to the inner node behind exposed output ``k``. Inner ids are ``OUTER:INNER`` (nested ``OUTER:A:B``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import jsonsafe
from .paths import UnsafePathError, check_component, safe_join
from .validation import NodeError, ValidationReport, node_count_error
from .workflow import WorkflowFormatError

PREFIX = "subgraph/"
USER_FOLDER = ("default", "subgraphs")
HOME_FOLDER = "subgraphs"
PLUGIN_FOLDER = "subgraphs"
SHIPPED_PACKAGE = "nodegraph.subgraphs"
#: Blueprints inside blueprints expand at most this deep.
MAX_ROUNDS = 8
MAX_FILE_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Blueprint:
    """One blueprint file: where it was found and how the editor lists it."""

    name: str
    source: str  # "user", "home", "custom_node" or "templates" (ComfyUI's word for shipped ones)
    node_pack: str
    path: Path

    @property
    def id(self) -> str:
        """A stable id for ``/api/global_subgraphs`` (a hash: never used as a path)."""
        return hashlib.sha256(f"{self.source}:{self.node_pack}/{self.name}".encode()).hexdigest()

    def text(self) -> str:
        """The file's JSON text; raises WorkflowFormatError when it is unreadable or too large."""
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise WorkflowFormatError(f"blueprint {self.name!r} ({self.path}) is over {MAX_FILE_BYTES:,} bytes")
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowFormatError(f"blueprint {self.name!r} cannot be read from {self.path}: {exc}") from None

    def load(self) -> dict[str, Any]:
        """The blueprint's workflow JSON; raises WorkflowFormatError naming the file when it is malformed."""
        try:
            data = jsonsafe.loads(self.text())
        except ValueError as exc:
            raise WorkflowFormatError(f"blueprint {self.name!r} ({self.path}) is not valid JSON: {exc}") from None
        subgraphs = data.get("definitions", {}).get("subgraphs") if isinstance(data, dict) else None
        if not isinstance(subgraphs, list) or not subgraphs or not isinstance(subgraphs[0], dict):
            raise WorkflowFormatError(f"blueprint {self.name!r} ({self.path}) has no 'definitions.subgraphs'; "
                                      "publish it from the editor (right-click a subgraph > Publish)")
        return data

    def entry(self, with_data: bool = False) -> dict[str, Any]:
        """ComfyUI's ``{source, name, info: {node_pack}}`` (plus ``data``, the JSON text, with ``with_data``)."""
        entry: dict[str, Any] = {"source": self.source, "name": self.name, "info": {"node_pack": self.node_pack}}
        if with_data:
            entry["data"] = self.text()
        return entry


def folders(config: Any, registry: Any, *, user: bool = True) -> list[tuple[str, str, Path]]:
    """(source, node pack, folder) in lookup order; ``user=False`` leaves out the editor's own user folder."""
    found: list[tuple[str, str, Path]] = []
    if user:
        found.append(("user", "user", Path(config.user_dir).joinpath(*USER_FOLDER)))
    found.append(("home", "nodegraph.home", Path(config.home) / HOME_FOLDER))
    for name in sorted(getattr(registry, "plugins", {})):
        module = registry.pm.get_plugin(name) if hasattr(registry, "pm") else None
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and Path(file).name == "__init__.py":  # a package, not a single-file plugin
            found.append(("custom_node", name, Path(file).parent / PLUGIN_FOLDER))
    try:
        found.append(("templates", "nodegraph", Path(str(importlib.resources.files(SHIPPED_PACKAGE)))))
    except (ModuleNotFoundError, TypeError):
        pass
    return found


def _files(folder: Path) -> Iterator[Path]:
    try:
        yield from sorted(p for p in folder.glob("*.json") if p.is_file())
    except OSError:
        return


def global_blueprints(config: Any, registry: Any) -> dict[str, Blueprint]:
    """``{id: Blueprint}`` for ``/api/global_subgraphs``: every folder but the editor's user folder."""
    out: dict[str, Blueprint] = {}
    for source, pack, folder in folders(config, registry, user=False):
        for path in _files(folder):
            blueprint = Blueprint(path.stem, source, pack, path)
            out.setdefault(blueprint.id, blueprint)
    return out


def find(name: str, config: Any, registry: Any) -> Blueprint | None:
    """The first blueprint named ``name`` in lookup order, or None (an unsafe name finds nothing)."""
    try:
        file = check_component(f"{name}.json", "blueprint name")
    except UnsafePathError:
        return None
    for source, pack, folder in folders(config, registry):
        if not folder.is_dir():
            continue
        try:
            path = safe_join(folder, file)
        except UnsafePathError:
            continue
        if path.is_file():
            return Blueprint(name, source, pack, path)
    return None


def _error(node_id: str, class_type: str, kind: str, message: str, details: str) -> ValidationReport:
    error = NodeError(kind, message, details)
    return ValidationReport(NodeError("prompt_outputs_failed_validation", "Prompt outputs failed validation"),
                            {node_id: {"errors": [error.to_json()], "dependent_outputs": [],
                                       "class_type": class_type}})


class _Outer:
    """A value from outside the blueprint, carried through the editor-format conversion untouched."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], int) and not isinstance(value[1], bool)


def _instance(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the root subgraph instance node, its definition); a file without an instance uses the first subgraph."""
    subgraphs = {str(s.get("id")): s for s in data["definitions"]["subgraphs"] if isinstance(s, dict)}
    for node in data.get("nodes") or []:
        if isinstance(node, dict) and str(node.get("type")) in subgraphs:
            return node, subgraphs[str(node["type"])]
    first = data["definitions"]["subgraphs"][0]
    return {"type": str(first.get("id")), "widgets_values": []}, first


def expand_one(node_id: str, node: dict[str, Any], blueprint: Blueprint, registry: Any,
               data: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    """(API nodes replacing ``node``, the value behind each exposed output: a link, a constant or None);
    ``data`` is the blueprint's loaded JSON when the caller has it."""
    from .ui_format import ui_to_api, widget_count
    from .ui_graph import Constant, FlatGraph

    data = blueprint.load() if data is None else data
    root, definition = _instance(data)
    slots = [str(s.get("name")) for s in definition.get("inputs") or [] if isinstance(s, dict)]
    given = node.get("inputs") or {}
    if not isinstance(given, dict):
        raise _error(node_id, node["class_type"], "invalid_input_type", "'inputs' must be an object",
                     "send {\"input name\": value or [node id, output index]}")
    unknown = [k for k in given if k not in slots]
    if unknown:
        raise _error(node_id, node["class_type"], "value_not_in_list",
                     f"blueprint {blueprint.name!r} has no input {unknown[0]!r}",
                     f"its exposed inputs are {', '.join(map(repr, slots)) or 'none'} ({blueprint.path})")
    nodes: list[dict[str, Any]] = []
    links: list[list[Any]] = []
    inputs: list[dict[str, Any]] = []
    for n, (name, value) in enumerate(given.items()):
        nodes.append({"id": n + 2, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                      "outputs": [{"name": name, "type": "*", "links": [n + 1]}], "widgets_values": [_Outer(value)]})
        links.append([n + 1, n + 2, 0, 1, slots.index(name), "*"])
        inputs.append({"name": name, "type": "*", "link": n + 1})
    ui = {"nodes": [dict(root, id=1, mode=0, inputs=inputs), *nodes], "links": links,
          "definitions": data["definitions"], "extra": data.get("extra") if isinstance(data.get("extra"), dict) else {}}
    try:
        inner = ui_to_api(ui, registry)
    except WorkflowFormatError as exc:
        raise _error(node_id, node["class_type"], "bad_blueprint", f"blueprint {blueprint.name!r} cannot be "
                     f"expanded: {exc}", f"fix or re-publish {blueprint.path}") from None

    def rename(value: Any) -> Any:
        if isinstance(value, _Outer):
            return value.value
        if _is_link(value) and value[0].startswith("1:"):
            return [f"{node_id}:{value[0][2:]}", value[1]]
        return value

    expanded = {f"{node_id}:{key[2:]}": dict(entry, inputs={k: rename(v) for k, v in entry["inputs"].items()})
                for key, entry in inner.items()}
    def count(inner_node: dict[str, Any]) -> int | None:
        known = registry.get(inner_node.get("type", ""))
        return widget_count(known) if known is not None else None

    graph = FlatGraph(ui, count)
    outputs: list[Any] = []
    for k in range(len(definition.get("outputs") or [])):
        key = graph.outputs.get(("1", k))
        src = graph.source(key) if key is not None else None
        if isinstance(src, Constant):
            outputs.append(rename(src.value))
        elif isinstance(src, tuple):
            outputs.append(rename([src[0], src[1]]))
        else:
            outputs.append(None)
    return expanded, outputs


def expand(api: Any, config: Any, registry: Any, limits: Any = None) -> Any:
    """``api`` with every ``subgraph/NAME`` node replaced by its blueprint's nodes (``api`` itself when it has
    none); an unknown blueprint or input raises ValidationReport naming the node and where blueprints are looked for."""
    def pending() -> list[str]:
        return [k for k, v in api.items() if isinstance(v, dict) and isinstance(v.get("class_type"), str)
                and v["class_type"].startswith(PREFIX)]

    if not isinstance(api, dict) or not pending():
        return api
    api = dict(api)
    outputs: dict[tuple[str, int], Any] = {}
    loaded: dict[str, tuple[Blueprint | None, Any]] = {}  # each file read once per prompt
    for _ in range(MAX_ROUNDS):
        todo = pending()
        if not todo:
            break
        for node_id in todo:
            node = api.pop(node_id)
            name = node["class_type"][len(PREFIX):]
            if name not in loaded:
                loaded[name] = (find(name, config, registry), None)
            blueprint, data = loaded[name]
            if blueprint is None:
                where = ", ".join(str(f) for source, _, f in folders(config, registry)
                                  if source in ("user", "home") or f.is_dir())
                raise _error(node_id, node["class_type"], "blueprint_not_found",
                             f"no subgraph blueprint named {name!r}",
                             f"save {name}.json (a workflow published from the editor's subgraph menu) in one of: "
                             f"{where}")
            try:
                if data is None:
                    data = blueprint.load()
                    loaded[name] = (blueprint, data)
                inner, outs = expand_one(node_id, node, blueprint, registry, data)
            except WorkflowFormatError as exc:
                raise _error(node_id, node["class_type"], "bad_blueprint", str(exc),
                             f"fix or re-publish {blueprint.path}") from None
            api.update(inner)
            outputs.update({(node_id, k): v for k, v in enumerate(outs)})
        api = _rewire(api, outputs)
    else:
        if pending():
            raise _error(pending()[0], api[pending()[0]]["class_type"], "blueprint_recursion",
                         f"subgraph blueprints nest deeper than {MAX_ROUNDS} levels (or use themselves)",
                         "flatten the blueprint in the editor")
    too_many = node_count_error(len(api), limits) if limits is not None else None
    if too_many is not None:
        raise too_many
    return api


def _rewire(api: dict[str, Any], outputs: dict[tuple[str, int], Any]) -> dict[str, Any]:
    """Point links to an expanded node's output at what stands behind it."""
    out: dict[str, Any] = {}
    for node_id, node in api.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            out[node_id] = node
            continue
        new = {}
        for name, value in inputs.items():
            for _ in range(MAX_ROUNDS + 1):
                if not (_is_link(value) and (value[0], value[1]) in outputs):
                    break
                target = outputs[(value[0], value[1])]
                if target is None:
                    raise _error(node_id, str(node.get("class_type")), "bad_linked_input",
                                 f"input {name!r} is linked to output {value[1]} of blueprint node {value[0]!r}, "
                                 "which nothing inside the blueprint feeds",
                                 "link another output, or connect that output inside the blueprint")
                value = target
            new[name] = value
        out[node_id] = dict(node, inputs=new)
    return out
