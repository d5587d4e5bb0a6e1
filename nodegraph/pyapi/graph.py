"""``Graph``: build a workflow in Python with node calls checked against the catalogue as they are made.

``model, clip, vae = g.CheckpointLoaderSimple(ckpt_name="nodegraph-shapes-v1")`` adds a node and returns typed
handles to its outputs; passing a handle as another node's input links them. ``g.to_api()`` is ComfyUI's API format.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import jsonsafe
from .catalogue import (
    Catalogue,
    GraphBuildError,
    check_constant,
    combo_options,
    input_specs,
)
from .dynamic import expand as expand_dynamic
from .dynamic import flatten as flatten_dynamic
from .dynamic import has_dynamic

if TYPE_CHECKING:
    # The node methods of this installation, when `nodegraph stubs` wrote them where the type checker looks.
    from nodegraph_catalogue import NodeMethods as _NodeMethods  # type: ignore[import-not-found, unused-ignore]

    from .result import Result
else:
    _NodeMethods = object


@dataclass(frozen=True)
class NodeHandle:
    """A node of a graph (what nodes without outputs, such as SaveImage, return); a key into a Result."""

    node_id: str
    class_type: str
    graph: Graph | None = field(default=None, compare=False, repr=False)

    @property
    def outputs(self) -> tuple[Output, ...]:
        """Handles to every output of the node."""
        if self.graph is None:
            return ()
        return self.graph.outputs_of(self.node_id)


@dataclass(frozen=True)
class Output:
    """One output of a node: ``[node_id, index]`` with its link type; pass it as an input to link nodes."""

    node_id: str
    index: int
    type: str
    name: str
    class_type: str
    graph: Graph | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """``CheckpointLoaderSimple output 1 'CLIP' (node 4)``."""
        return f"{self.class_type} output {self.index} {self.name!r} (node {self.node_id})"

    @property
    def node(self) -> NodeHandle:
        """The node this output belongs to."""
        return NodeHandle(self.node_id, self.class_type, self.graph)


class Outputs(tuple):
    """The outputs of a multi-output node, unpackable (``model, clip, vae = ...``) and reachable by name."""

    node: NodeHandle

    def __getattr__(self, name: str) -> Output:
        for out in self:
            if out.name.lower() == name.lower():
                return out
        raise AttributeError(f"{self.node.class_type} has no output named {name!r}; it has "
                             f"{', '.join(o.name for o in self)}")


@dataclass(frozen=True)
class Upload:
    """A local image given for a file input (LoadImage's ``image``): copied or uploaded when the graph runs."""

    data: bytes
    suffix: str = ".png"

    @classmethod
    def of(cls, source: Any) -> Upload:
        """From a path or a Pillow image."""
        if isinstance(source, (str, Path)):
            path = Path(source)
            return cls(path.read_bytes(), path.suffix.lower() or ".png")
        buf = io.BytesIO()
        source.save(buf, format="PNG")
        return cls(buf.getvalue(), ".png")

    @property
    def name(self) -> str:
        """A content-addressed file name, so the same image is stored once."""
        return f"pyapi-{hashlib.sha256(self.data).hexdigest()[:16]}{self.suffix}"


def _is_image(value: Any) -> bool:
    return hasattr(value, "save") and hasattr(value, "getbands")


class Graph(_NodeMethods):
    """A workflow under construction; node classes are methods: ``g.KSampler(model=model, seed=1, ...)``."""

    def __init__(self, engine: Any = None, *, catalogue: Catalogue | None = None) -> None:
        self._engine = engine
        self._catalogue = catalogue
        self.nodes: dict[str, dict[str, Any]] = {}
        self._next = 1
        self._has_uploads = False

    # ---- catalogue and engine --------------------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        """The in-process Engine this graph runs on (the process default one unless given)."""
        if self._engine is None:
            from .local import default_engine
            self._engine = default_engine()
        return self._engine

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue node calls are checked against (the engine's unless given)."""
        if self._catalogue is None:
            self._catalogue = Catalogue.from_engine(self.engine)
        return self._catalogue

    if not TYPE_CHECKING:  # hidden from type checkers: with the stubs, an unknown node name is a type error
        def __getattr__(self, name: str) -> Callable[..., Any]:
            if name.startswith("_"):
                raise AttributeError(name)
            self.catalogue.require(name)
            return lambda **inputs: self.node(name, **inputs)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.catalogue.names))

    # ---- building --------------------------------------------------------------------------------------------------

    def node(self, class_type: str, /, *, _id: str | None = None, _title: str | None = None, **inputs: Any) -> Any:
        """Add a node (what ``g.ClassName(...)`` calls): returns its output handle, a tuple of them, or a
        NodeHandle when it has no outputs."""
        entry = self.catalogue.require(class_type)
        nid = self._new_id(_id)
        stored = self._check_inputs(class_type, nid, entry, inputs)
        node: dict[str, Any] = {"class_type": class_type, "inputs": stored}
        if _title:
            node["_meta"] = {"title": _title}
        self.nodes[nid] = node
        return self._returned(nid)

    def _new_id(self, wanted: str | None) -> str:
        if wanted is not None:
            if str(wanted) in self.nodes:
                raise GraphBuildError(f"node id {wanted!r} is already used; leave _id out to get a fresh one")
            return str(wanted)
        while str(self._next) in self.nodes:
            self._next += 1
        return str(self._next)

    def _check_inputs(self, class_type: str, nid: str, entry: Mapping[str, Any],
                      inputs: Mapping[str, Any]) -> dict[str, Any]:
        specs = input_specs(entry)
        if has_dynamic(specs):  # nested or dotted grown/selected inputs, stored dotted (the API format)
            inputs = flatten_dynamic(class_type, specs, inputs)
            specs = expand_dynamic(class_type, specs, inputs)
        unknown = [n for n in inputs if n not in specs]
        if unknown:
            raise GraphBuildError(f"{class_type} has no input {unknown[0]!r}; its inputs are "
                                  f"{', '.join(specs) or '(none)'}")
        given = {name: self._check_value(f"{class_type}.{name} (node {nid})", specs[name][0], specs[name][1], value)
                 for name, value in inputs.items()}  # bad values first: they say more than a missing input
        stored: dict[str, Any] = {}
        for name, (kind, opts, required) in specs.items():
            where = f"{class_type}.{name} (node {nid})"
            if name not in given:
                default = self._default(kind, opts)
                if default is not None:
                    stored[name] = default
                elif required:
                    what = f"a link to a {kind} output" if isinstance(kind, str) and kind not in (
                        "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") else "a value"
                    raise GraphBuildError(f"{where} is required: pass {name}=... ({what})")
                continue
            stored[name] = given[name]
        return stored

    @staticmethod
    def _default(kind: Any, opts: Mapping[str, Any]) -> Any:
        options = combo_options(kind, opts)
        if options is not None:
            return opts.get("default") if opts.get("default") in options else (options[0] if options else None)
        return opts.get("default")

    def _check_value(self, where: str, kind: Any, opts: Mapping[str, Any], value: Any) -> Any:
        if isinstance(value, Outputs) and len(value) == 1:
            value = value[0]
        if isinstance(value, Outputs):
            raise GraphBuildError(f"{where}: got all {len(value)} outputs of {value.node.class_type}; pick one, "
                                  f"e.g. model, clip, vae = g.{value.node.class_type}(...)")
        if isinstance(value, NodeHandle):
            raise GraphBuildError(f"{where}: {value.class_type} (node {value.node_id}) has no outputs to link")
        if isinstance(value, Output):
            if value.graph is not None and value.graph is not self:
                raise GraphBuildError(f"{where}: {value.describe()} belongs to another Graph; build both nodes "
                                      "in the same graph")
            declared = "COMBO" if combo_options(kind, opts) is not None else str(kind)
            if declared != "COMBO" and not self.catalogue.compatible(value.type, declared):
                raise GraphBuildError(f"{where} expects {declared} but got {value.type} from {value.describe()}; "
                                      f"link an output of type {declared}")
            return [value.node_id, value.index]
        if isinstance(value, (Upload, Path)) or _is_image(value):
            if not opts.get("image_upload"):
                raise GraphBuildError(f"{where} does not take files; pass the file name as a string")
            self._has_uploads = True
            return value if isinstance(value, Upload) else Upload.of(value)
        return check_constant(where, kind, opts, value)

    def _returned(self, nid: str) -> Any:
        outs = self.outputs_of(nid)
        if not outs:
            return NodeHandle(nid, self.nodes[nid]["class_type"], self)
        if len(outs) == 1:
            return outs[0]
        return outs

    def outputs_of(self, node_id: str) -> Outputs:
        """Handles to the outputs of node ``node_id``."""
        class_type = self.nodes[node_id]["class_type"]
        entry = self.catalogue.require(class_type)
        names = entry.get("output_name") or entry.get("output", [])
        outs = Outputs(Output(node_id, i, str(t), str(names[i] if i < len(names) else t), class_type, self)
                       for i, t in enumerate(entry.get("output", [])))
        outs.node = NodeHandle(node_id, class_type, self)
        return outs

    def __getitem__(self, node_id: str | int) -> NodeHandle:
        """The node with id ``node_id`` (e.g. of a graph read with ``from_api``)."""
        key = str(node_id)
        if key not in self.nodes:
            raise KeyError(f"the graph has no node {key!r} (nodes: {', '.join(self.nodes)})")
        return NodeHandle(key, self.nodes[key]["class_type"], self)

    def set(self, node: NodeHandle | str | int, input_name: str, value: Any) -> None:
        """Change one input of an existing node, checked like a node call."""
        nid = node.node_id if isinstance(node, NodeHandle) else str(node)
        class_type = self[nid].class_type
        entry = self.catalogue.require(class_type)
        specs = input_specs(entry)
        if has_dynamic(specs):  # the new value may change which inputs the node has: check the node again
            current = {k: v for k, v in self.nodes[nid]["inputs"].items()
                       if not (k.startswith(input_name + ".") and input_name in specs)}
            current.update(flatten_dynamic(class_type, specs, {input_name: value}))
            self.nodes[nid]["inputs"] = self._check_inputs(class_type, nid, entry, self._as_handles(current))
            return
        if input_name not in specs:
            raise GraphBuildError(f"{class_type} has no input {input_name!r}; its inputs are {', '.join(specs)}")
        kind, opts, _ = specs[input_name]
        self.nodes[nid]["inputs"][input_name] = self._check_value(f"{class_type}.{input_name} (node {nid})",
                                                                  kind, opts, value)

    # ---- formats ---------------------------------------------------------------------------------------------------

    def to_api(self) -> dict[str, Any]:
        """ComfyUI's API format ``{id: {class_type, inputs, _meta}}`` (local images named as they will be stored)."""
        out: dict[str, Any] = {}
        for nid, node in self.nodes.items():
            inputs = {k: (v.name if isinstance(v, Upload) else list(v) if isinstance(v, list) else v)
                      for k, v in node["inputs"].items()}
            out[nid] = {**node, "inputs": inputs}
        return out

    def _run_api(self) -> dict[str, Any]:
        """The API JSON for a run: the nodes themselves when no local images need naming (the engine only reads
        it), so running an unchanged graph again costs no copy."""
        return self.to_api() if self._has_uploads else self.nodes

    def uploads(self) -> dict[str, Upload]:
        """The local images the graph uses, by stored name."""
        if not self._has_uploads:
            return {}
        return {v.name: v for node in self.nodes.values() for v in node["inputs"].values() if isinstance(v, Upload)}

    @classmethod
    def from_api(cls, data: Mapping[str, Any], engine: Any = None, *, catalogue: Catalogue | None = None,
                 check: bool = True) -> Graph:
        """A graph from API-format JSON; node calls are checked unless ``check`` is False (links in any order)."""
        g = cls(engine, catalogue=catalogue)
        for nid, node in data.items():
            if not isinstance(node, Mapping) or "class_type" not in node:
                raise GraphBuildError(f"node {nid!r} is not {{class_type, inputs}}; is this API-format JSON?")
            g.nodes[str(nid)] = {k: v for k, v in node.items() if k in ("class_type", "inputs", "_meta")}
            g.nodes[str(nid)]["inputs"] = dict(node.get("inputs", {}))
        if check:
            for nid, node in g.nodes.items():
                entry = g.catalogue.require(node["class_type"])
                node["inputs"] = g._check_inputs(node["class_type"], nid, entry, g._as_handles(node["inputs"]))
        return g

    def _as_handles(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Stored inputs with their links to nodes of this graph as output handles (to check them again)."""
        out = dict(inputs)
        for k, v in inputs.items():
            if _is_link(v) and str(v[0]) in self.nodes:
                outs = self.outputs_of(str(v[0]))
                out[k] = outs[v[1]] if v[1] < len(outs) else v
        return out

    def save(self, path: str | Path) -> Path:
        """Write the API-format JSON to ``path``."""
        path = Path(path)
        path.write_text(jsonsafe.dumps(self.to_api(), indent=1) + "\n", encoding="utf-8")
        return path

    # ---- running ---------------------------------------------------------------------------------------------------

    def run(self, **kwargs: Any) -> Result:
        """Run in-process on the engine (cached across runs); see ``nodegraph.pyapi.local.run_api`` for options."""
        from .local import run_api, store_uploads

        store_uploads(self.engine.config, self.uploads())
        return run_api(self.engine, self._run_api(), graph=self, **kwargs)

    def stream(self, **kwargs: Any) -> Any:
        """An async iterator of the run's events; its ``result`` is set when the run ends."""
        from .local import EventStream, store_uploads

        store_uploads(self.engine.config, self.uploads())
        return EventStream(self.engine, self._run_api(), graph=self, **kwargs)

    def workflow(self) -> Any:
        """This graph as a Workflow on the same engine (local images stored): for ``run(set=...)`` and sweeps."""
        from .local import store_uploads
        from .workflow import Workflow

        store_uploads(self.engine.config, self.uploads())
        return Workflow(self.to_api(), self.engine)

    def sweep(self, axes: Mapping[Any, Any], mode: str = "product", **kwargs: Any) -> Any:
        """Sweep inputs, keyed ``"3.seed"`` or ``(handle, "seed")``: see ``Workflow.sweep``."""
        return self.workflow().sweep(axes, mode, **kwargs)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes: {', '.join(n['class_type'] for n in list(self.nodes.values())[:6])})"


def _is_link(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))
