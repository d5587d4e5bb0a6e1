"""Where saved media go and what they carry: ``{prefix}_{counter:05}_.{ext}`` files created exclusively (so several
processes saving into one folder never overwrite each other) and the run's metadata (prompt, workflow, manifest)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, BinaryIO

from ..config import safe_join
from ..paths import check_component


def _next_counter(folder: Path, stem: str) -> int:
    """The counter after the highest ``{stem}_{counter}_.{any extension}`` in ``folder`` (ComfyUI's counting)."""
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_?\.[A-Za-z0-9]+$")
    best = 0
    if folder.is_dir():
        for path in folder.iterdir():
            if m := pattern.match(path.name):
                best = max(best, int(m.group(1)))
    return best + 1


class OutputFile:
    """A new, exclusively created file ``{stem}_{counter:05}_.{ext}`` under a root; ``entry`` is its UI entry."""

    def __init__(self, root: Path, prefix: str, ext: str, kind: str = "output") -> None:
        subfolder, _, stem = str(prefix).replace("\\", "/").rpartition("/")
        stem = stem or "ComfyUI"
        check_component(f"{stem}_00000_.{ext}", "filename_prefix")  # NUL, control characters, too long
        folder = safe_join(root, subfolder) if subfolder else root.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        counter = _next_counter(folder, stem)
        while True:
            name = f"{stem}_{counter:05}_.{ext}"
            try:
                self.handle: BinaryIO = open(folder / name, "xb")
            except FileExistsError:
                counter += 1
                continue
            break
        self.path = folder / name
        self.entry = {"filename": name, "subfolder": subfolder, "type": kind}

    def close(self) -> None:
        """Close the reserved handle (writers that reopen the path by name call this first)."""
        self.handle.close()

    def discard(self) -> None:
        """Remove a file whose writing failed, so no half-written file stays behind."""
        self.handle.close()
        self.path.unlink(missing_ok=True)


def run_metadata(ctx: Any) -> dict[str, Any]:
    """What ComfyUI writes into saved media: ``prompt`` plus each extra_pnginfo entry (``workflow``), and nodegraph's
    provenance manifest under ``nodegraph``; values are JSON-ready objects (not yet strings)."""
    data: dict[str, Any] = {}
    prompt = getattr(ctx, "prompt", None)
    if prompt:
        data["prompt"] = prompt
    data.update(getattr(ctx, "extra_pnginfo", None) or {})
    manifest = getattr(ctx, "manifest", None)
    if manifest:
        data["nodegraph"] = manifest
    return data


def as_text(value: Any) -> str:
    """A metadata value as the text stored in a container tag (strings as they are, anything else as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)
