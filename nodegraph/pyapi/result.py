"""``Result``: what a run produced, looked up by the handles the Graph returned (or node ids)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TYPES = ("IMAGE",)


def _key(handle: Any) -> tuple[str, int | None]:
    """(node id, output index or None for the node itself) of a handle, node id or ``[id, index]``."""
    if hasattr(handle, "index") and hasattr(handle, "node_id"):
        return str(handle.node_id), int(handle.index)
    if hasattr(handle, "node_id"):
        return str(handle.node_id), None
    if isinstance(handle, (list, tuple)) and len(handle) == 2:
        return str(handle[0]), int(handle[1])
    return str(handle), None


@dataclass
class Result:
    """Outputs of one run: ``result[handle]`` gives images (PIL), texts, or a node output's value (latents,
    tensors); also what executed, what came from the cache, per-node timings and the provenance manifest."""

    status: str
    prompt_id: str
    outputs: dict[str, dict[str, Any]]
    executed: list[str]
    cached: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    error: dict[str, Any] | None = None
    prompt: dict[str, Any] = field(default_factory=dict)
    _manifest: Callable[[], dict[str, Any] | None] | None = field(default=None, repr=False)
    _values: Callable[[str], tuple[Any, ...] | None] | None = field(default=None, repr=False)
    _file: Callable[[dict[str, Any]], bytes] | None = field(default=None, repr=False)
    _path: Callable[[dict[str, Any]], Path] | None = field(default=None, repr=False)
    _types: Callable[[str], list[str]] | None = field(default=None, repr=False)

    # ---- construction ----------------------------------------------------------------------------------------------

    @classmethod
    def local(cls, engine: Any, prompt: Any, run: Any, *, graph: Any = None, timings: dict[str, float] | None = None,
              wall: float = 0.0) -> Result:
        """From an in-process run (values read back from the engine's cache by content key, when asked)."""
        config = engine.config
        keys: dict[str, str] = {}
        volatile: set[str] = set()

        def values(node_id: str) -> tuple[Any, ...] | None:
            from ..executor import cache_keys

            if node_id not in prompt.nodes:
                raise KeyError(f"node {node_id} did not run: it feeds no output node; link it to one (e.g. "
                               "PreviewImage) or read it from a node that does")
            if not keys:
                computed, unstable = cache_keys(prompt, config)
                keys.update(computed)
                volatile.update(unstable)
            if node_id in volatile:
                raise KeyError(f"node {node_id} ({prompt.nodes[node_id].definition.name}) depends on a "
                               "non-deterministic node, so its value is not kept; read an output node's images or "
                               "text instead")
            entry = engine.cache.get(keys[node_id])
            return None if entry is None else entry.outputs

        def path(ref: dict[str, Any]) -> Path:
            return config.folder_for(ref.get("type") or "output") / (ref.get("subfolder") or "") / ref["filename"]

        def types(node_id: str) -> list[str]:
            node = prompt.nodes.get(node_id)
            return [o.type for o in node.definition.meta.outputs] if node is not None else []

        error = None
        if run.error is not None:
            error = {"node_id": run.error.node_id, "node_type": run.error.class_type,
                     "exception_type": run.error.exception_type, "exception_message": run.error.exception_message}
        return cls(run.status, run.run_id, dict(run.outputs), list(run.executed), list(run.cached),
                   timings or {}, wall, error, prompt.raw, lambda: run.manifest, values,
                   lambda ref: path(ref).read_bytes(), path, types)

    # ---- lookups ---------------------------------------------------------------------------------------------------

    def __getitem__(self, handle: Any) -> Any:
        node_id, index = _key(handle)
        if index is None:
            ui = self.ui(node_id)
            if ui.get("images"):
                return self.images(node_id)
            if ui.get("text") is not None:
                return list(ui["text"])
            return ui
        value = self.value(handle)
        kind = self._types(node_id) if self._types is not None else []
        if index < len(kind) and kind[index] in IMAGE_TYPES and hasattr(value, "detach"):
            from ..imaging import image_to_pils
            return image_to_pils(value)
        return value

    def ui(self, node: Any) -> dict[str, Any]:
        """The UI payload of an output node (``images``, ``text``, …); KeyError naming the output nodes if none."""
        node_id, _ = _key(node)
        if node_id not in self.outputs:
            raise KeyError(f"node {node_id} has no outputs in this result (status {self.status}); output nodes "
                           f"with results: {', '.join(self.outputs) or 'none'}")
        return self.outputs[node_id]

    def value(self, handle: Any) -> Any:
        """The value on a node output (IMAGE tensor, LATENT dict, …), as the next node would receive it."""
        node_id, index = _key(handle)
        if self._values is None:
            raise KeyError(f"values of node outputs are not available from a server run; read output node "
                           f"{node_id}'s images or text instead (result[save_node])")
        values = self._values(node_id)
        if values is None:
            raise KeyError(f"node {node_id}'s value is no longer cached (the cache is bounded); run again")
        return values[index or 0]

    tensor = value

    def refs(self, node: Any) -> list[dict[str, Any]]:
        """The files an output node wrote: ``{filename, subfolder, type}`` entries."""
        ui = self.ui(node)
        return [r for key in ("images", "gifs", "audio", "video") for r in ui.get(key) or [] if isinstance(r, dict)
                and "filename" in r]

    def paths(self, node: Any) -> list[Path]:
        """Where an output node's files are (in-process runs; for server runs use ``save``)."""
        if self._path is None:
            raise KeyError("a server run's files are on the server; use result.save(folder) or result.images(node)")
        return [self._path(r) for r in self.refs(node)]

    def files(self, node: Any) -> list[bytes]:
        """The bytes of an output node's files."""
        if self._file is None:
            raise KeyError("this result has no file access")
        return [self._file(r) for r in self.refs(node)]

    def images(self, handle: Any = None) -> list[Any]:
        """Pillow images: of an output node's files, an IMAGE output, or (no argument) of every output node."""
        from PIL import Image

        if handle is None:
            return [img for nid in self.outputs for img in self.images(nid)]
        node_id, index = _key(handle)
        if index is not None:
            return list(self[handle])
        out = []
        for data in self.files(node_id):
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                out.append(img.copy())
        return out

    def texts(self, node: Any) -> list[str]:
        """The text an output node showed (ShowText-like nodes)."""
        return [str(t) for t in self.ui(node).get("text", [])]

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The provenance manifest (models with hashes, versions, runtime), when the run built one."""
        return self._manifest() if self._manifest is not None else None

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.status == "success"

    def save(self, folder: str | Path) -> list[Path]:
        """Write every output file into ``folder``; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for nid in self.outputs:
            for ref, data in zip(self.refs(nid), self.files(nid)):
                path = folder / Path(ref["filename"]).name
                path.write_bytes(data)
                written.append(path)
        return written

    def __repr__(self) -> str:
        return (f"Result({self.status}, {len(self.executed)} executed, {len(self.cached)} cached, "
                f"outputs {sorted(self.outputs)}, {self.wall:.2f}s)")
