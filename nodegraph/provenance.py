"""Provenance: what made an image (versions, nodes, model hashes, device), and how it differs from this install."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .validation import ValidatedPrompt
from .workflow import WorkflowFormatError, is_ui_format, read_workflow_file

MANIFEST_CHUNK = "nodegraph"
MANIFEST_VERSION = 1


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class HashCache:
    """SHA-256 of files, computed once and remembered by (path, size, mtime) in a small SQLite table."""

    def __init__(self, db_path: Path | None = None) -> None:
        self._db_path = db_path
        self._memory: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(db_path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS file_hashes (path TEXT, size INTEGER, mtime_ns INTEGER, "
                           "sha256 TEXT, PRIMARY KEY (path, size, mtime_ns))")

    def sha256(self, path: str | Path) -> str:
        """The file's SHA-256 (a folder: a hash over its files' relative paths and hashes)."""
        path = Path(path).resolve()
        if path.is_dir():
            digest = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{child.relative_to(path).as_posix()}\0{self.sha256(child)}\n".encode())
            return digest.hexdigest()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._memory:
                return self._memory[key]
            if self._db_path is not None:
                with sqlite3.connect(self._db_path) as db:
                    row = db.execute("SELECT sha256 FROM file_hashes WHERE path=? AND size=? AND mtime_ns=?",
                                     key).fetchone()
                if row:
                    self._memory[key] = row[0]
                    return row[0]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        value = digest.hexdigest()
        with self._lock:
            self._memory[key] = value
            if self._db_path is not None:
                with sqlite3.connect(self._db_path) as db:
                    db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (*key, value))
        return value


def runtime_info(services: Any = None) -> dict[str, Any]:
    """Library versions and the device/dtype in use (when a DeviceManager exists)."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": _version("torch"),
                            "diffusers": _version("diffusers"), "transformers": _version("transformers")}
    try:
        from .diffusion.devices import DeviceManager

        manager = services.find(DeviceManager) if services is not None else None
        if manager is not None:
            info.update(manager.describe())
    except Exception:  # pragma: no cover - torch-free installs
        pass
    return info


def build_manifest(prompt: ValidatedPrompt, config: Any, hashes: HashCache, services: Any = None) -> dict[str, Any]:
    """The manifest of a run: nodegraph version, each node's class/version/plugin, model files' SHA-256, runtime."""
    nodes: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for nid in prompt.order:
        node = prompt.nodes[nid]
        d = node.definition
        nodes[nid] = {"class_type": d.name, "version": d.meta.version, "plugin": d.plugin,
                      "plugin_version": d.plugin_version}
        for path in d.cls.model_files(config, **node.constants):
            if os.path.exists(path):
                models[str(path)] = {"node": nid, "name": Path(path).name, "sha256": hashes.sha256(path)}
    return {"manifest_version": MANIFEST_VERSION, "nodegraph": _version("nodegraph"), "nodes": nodes,
            "models": models, "runtime": runtime_info(services)}


def stamp_versions(api: dict[str, Any], prompt: ValidatedPrompt) -> dict[str, Any]:
    """A copy of API JSON with each planned node's version in ``_meta.version`` (so saved workflows record it)."""
    out: dict[str, Any] = {}
    for nid, node in api.items():
        entry = dict(node)
        if nid in prompt.nodes:
            entry["_meta"] = dict(entry.get("_meta") or {}, version=prompt.nodes[nid].definition.meta.version)
        out[nid] = entry
    return out


def compare_with_installation(manifest: Any, engine: Any) -> list[str]:
    """Every difference between an image's manifest and this installation, one readable line each."""
    if not isinstance(manifest, dict):
        return ["the image carries no nodegraph manifest: cannot check versions or model hashes"]
    diffs: list[str] = []
    if manifest.get("nodegraph") != _version("nodegraph"):
        diffs.append(f"nodegraph {manifest.get('nodegraph')} made the image; installed is {_version('nodegraph')}")
    for nid, info in (manifest.get("nodes") or {}).items():
        d = engine.registry.get(info.get("class_type", ""))
        if d is None:
            diffs.append(f"node {nid}: {info.get('class_type')} (plugin {info.get('plugin')} "
                         f"{info.get('plugin_version') or ''}) is not installed".replace(" )", ")"))
            continue
        if d.meta.version != info.get("version"):
            diffs.append(f"node {nid}: {d.name} {info.get('version')} made the image; installed is {d.meta.version}")
        if info.get("plugin_version") and d.plugin_version and d.plugin_version != info["plugin_version"]:
            diffs.append(f"node {nid}: plugin {d.plugin} {info['plugin_version']} made the image; "
                         f"installed is {d.plugin_version}")
    hashes: HashCache = engine.services.get(HashCache, lambda: HashCache(engine.config.user_dir / "hashes.db"))
    for path, info in (manifest.get("models") or {}).items():
        if not os.path.exists(path):
            diffs.append(f"model {info.get('name')}: {path} is missing here")
        elif hashes.sha256(path) != info.get("sha256"):
            diffs.append(f"model {info.get('name')}: {path} has another SHA-256 than the one that made the image")
    runtime, here = manifest.get("runtime") or {}, runtime_info(engine.services)
    for key in ("torch", "diffusers"):
        if runtime.get(key) and runtime.get(key) != here.get(key):
            diffs.append(f"{key} {runtime.get(key)} made the image; installed is {here.get(key)}")
    return diffs


_PARAMS = ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "width", "height",
           "batch_size", "ckpt_name", "lora_name", "text")


def inspect_image(path: Path) -> str:
    """A readable summary of the workflow, manifest and generation parameters a PNG or WEBP carries."""
    loaded = read_workflow_file(path)
    api, extra = loaded.data, loaded.extra
    if is_ui_format(api):  # only the editor's graph: list its nodes (``nodegraph run`` converts it)
        api = {str(n.get("id")): {"class_type": n.get("type"), "inputs": {}} for n in api["nodes"]
               if isinstance(n, dict)}
    if not isinstance(api, dict):
        raise WorkflowFormatError(f"{path} carries no workflow object (its {loaded.source} holds a "
                                  f"{type(api).__name__})")
    manifest = extra.get(MANIFEST_CHUNK)
    lines = [f"{path} (read: {loaded.describe()})", "", "workflow:"]
    for nid, node in sorted(api.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if not isinstance(node, dict):
            continue
        version = ((manifest or {}).get("nodes", {}).get(nid, {}) or {}).get("version") \
            or (node.get("_meta") or {}).get("version") or "?"
        lines.append(f"  {nid:>4} {node.get('class_type')} {version}")
        for key, value in (node.get("inputs") or {}).items():
            if key in _PARAMS and not isinstance(value, list):
                lines.append(f"         {key} = {json.dumps(value)}")
    if manifest:
        lines += ["", "manifest:", f"  nodegraph {manifest.get('nodegraph')}"]
        for key, value in (manifest.get("runtime") or {}).items():
            lines.append(f"  {key}: {value}")
        for model_path, info in (manifest.get("models") or {}).items():
            lines.append(f"  model {info.get('name')} sha256 {info.get('sha256')} (node {info.get('node')})")
    else:
        lines += ["", "manifest: none (not made by nodegraph, or made before manifests)"]
    if "workflow" in extra:
        lines += ["", "editor workflow: present (drop the image on the editor to restore the graph)"]
    return "\n".join(lines)
