"""Output files travelling from a worker to the head when they share no disk: read on the worker, written on the head."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..config import EngineConfig, UnsafePathError, safe_join
from ..paths import check_component

log = logging.getLogger(__name__)

#: The folder types a UI payload may name that hold files the worker wrote.
SHIPPED_TYPES = ("output", "temp")


@dataclass(frozen=True)
class ShippedFile:
    """One output file: where the worker saved it (type, subfolder, name) and its bytes."""

    type: str
    subfolder: str
    filename: str
    data: bytes


def file_entries(ui: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Every ``{filename, subfolder, type}`` entry of a UI payload (``images``, ``gifs``, ``files``, …)."""
    for value in (ui or {}).values():
        if isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict) and isinstance(entry.get("filename"), str) \
                        and entry.get("type") in SHIPPED_TYPES:
                    yield entry


def collect_files(config: EngineConfig, ui: dict[str, Any] | None) -> list[ShippedFile]:
    """Read the files a node's UI payload names from the worker's folders (missing ones are logged and skipped)."""
    files = []
    for entry in file_entries(ui):
        subfolder = str(entry.get("subfolder") or "")
        try:
            path = safe_join(config.folder_for(entry["type"]), subfolder, entry["filename"])
            files.append(ShippedFile(entry["type"], subfolder, entry["filename"], path.read_bytes()))
        except (OSError, UnsafePathError) as exc:
            log.warning("output file %s/%s could not be sent to the head: %s", subfolder, entry["filename"], exc)
    return files


def _free_name(folder: Path, filename: str, data: bytes) -> tuple[str, bool]:
    """A name in ``folder`` for ``data``: the same one unless another file holds it; (name, already there)."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot:
        stem, suffix = filename, ""
    name, k = filename, 0
    while True:
        path = folder / name
        try:
            with open(path, "xb") as handle:
                handle.write(data)
            return name, False
        except FileExistsError:
            if path.is_file() and path.read_bytes() == data:
                return name, True
        k += 1
        name = f"{stem}-{k}{dot}{suffix}"


def store_files(config: EngineConfig, files: list[ShippedFile]) -> dict[tuple[str, str, str], str]:
    """Write shipped files into the head's folders; returns {(type, subfolder, old name): new name} for renames."""
    renamed: dict[tuple[str, str, str], str] = {}
    for f in files:
        folder = safe_join(config.folder_for(f.type), f.subfolder)
        folder.mkdir(parents=True, exist_ok=True)
        name, _ = _free_name(folder, check_component(f.filename, "shipped file name"), f.data)
        if name != f.filename:
            renamed[(f.type, f.subfolder, f.filename)] = name
    return renamed


def rename_entries(ui: dict[str, Any] | None, renamed: dict[tuple[str, str, str], str]) -> dict[str, Any] | None:
    """A copy of a UI payload with renamed files' entries pointing at their new names."""
    if not ui or not renamed:
        return ui
    out: dict[str, Any] = {}
    for key, value in ui.items():
        if isinstance(value, list):
            value = [dict(e, filename=renamed.get((e.get("type"), str(e.get("subfolder") or ""), e.get("filename")),
                                                  e.get("filename")))
                     if isinstance(e, dict) and "filename" in e else e for e in value]
        out[key] = value
    return out
