"""Textual-inversion embeddings named in prompts as ``embedding:name`` (files in ``models/embeddings``).

Found the way ComfyUI finds them: ``name`` relative to the embeddings folder or to any folder below it, as given
or with ``.safetensors`` added. Only ``.safetensors`` files are read (a pickle ``.pt``/``.bin`` of that name is
reported, never unpickled). Which tensor of the file is used:

- a file with one tensor per text encoder (SDXL: ``clip_l``, ``clip_g``; SD2: ``clip_h``): the one for the encoder;
- otherwise the first tensor of the file: A1111's ``emb_params`` and diffusers' ``{"<token>": tensor}`` layouts.

A tensor ``[n, width]`` stands for ``n`` tokens (``[width]`` for one). A name that is not found, or a file that
cannot be read, is logged as a warning and ignored, as ComfyUI does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..paths import UnsafePathError, safe_join

log = logging.getLogger(__name__)

#: The word prefix that names an embedding in a prompt.
IDENTIFIER = "embedding:"
#: The per-encoder key of each text encoder family (ComfyUI's ``embedding_key``).
ENCODER_KEYS = {"sd1": ("clip_l",), "sd2": ("clip_h",), "sdxl": ("clip_l", "clip_g"), "sdxl_refiner": ("clip_g",)}
_PICKLES = (".pt", ".bin", ".ckpt", ".pth")
#: Folders below the embeddings folder searched at most (a huge tree is not walked to the end).
MAX_FOLDERS = 10_000


def encoder_keys(arch: str, count: int) -> tuple[str, ...]:
    """The per-encoder tensor key for each of the ``count`` encoders of an ``arch`` CLIP."""
    keys = ENCODER_KEYS.get(arch)
    if keys is None or len(keys) != count:
        keys = ("clip_l", "clip_g") if count == 2 else ("clip_l",) * count
    return keys


class Embeddings:
    """The embeddings of one or more folders, each file read at most once (one per prompt encoding)."""

    def __init__(self, folders: Sequence[Path | str]) -> None:
        self.roots = [Path(f) for f in folders if Path(f).is_dir()]
        self._folders: list[Path] | None = None
        self._files: dict[str, dict[str, Any] | None] = {}

    def folders(self) -> list[Path]:
        """Each root, then every folder below it (sorted), as ComfyUI searches them."""
        if self._folders is None:
            found: list[Path] = []
            for root in self.roots:
                found.append(root)
                for current, dirs, _files in os.walk(root, followlinks=False):
                    dirs.sort()
                    found.extend(Path(current) / d for d in dirs)
                    if len(found) > MAX_FOLDERS:
                        break
            self._folders = found[:MAX_FOLDERS]
        return self._folders

    def find(self, name: str) -> Path | None:
        """The ``.safetensors`` file ``name`` (with or without the extension) names, or None."""
        for folder in self.folders():
            for candidate in (name, name + ".safetensors"):
                try:
                    path = safe_join(folder, candidate)
                except (UnsafePathError, ValueError):
                    continue
                if path.is_file() and path.suffix.lower() == ".safetensors":
                    return path
        for folder in self.folders():
            for ext in ("",) + _PICKLES:
                try:
                    path = safe_join(folder, name + ext)
                except (UnsafePathError, ValueError):
                    continue
                if path.is_file() and path.suffix.lower() in _PICKLES:
                    log.warning("embedding:%s is a pickle file (%s), which is never loaded; convert it to "
                                ".safetensors", name, path.name)
                    return None
        return None

    def _tensors(self, name: str) -> dict[str, Any] | None:
        if name not in self._files:
            path = self.find(name)
            tensors = None
            if path is not None:
                try:
                    from safetensors.torch import load_file

                    tensors = load_file(str(path), device="cpu")
                except Exception as exc:  # noqa: BLE001 - a damaged file is skipped like a missing one
                    log.warning("embedding:%s could not be read (%s); ignoring it", name, exc)
            self._files[name] = tensors
        return self._files[name]

    def get(self, name: str, key: str | None) -> Any | None:
        """The embedding ``name`` for the encoder whose file key is ``key``: a [n, width] float tensor, or None."""
        tensors = self._tensors(name)
        if not tensors:
            return None
        tensor = tensors[key] if key is not None and key in tensors else next(iter(tensors.values()))
        return tensor.reshape(1, -1) if tensor.ndim == 1 else tensor.reshape(-1, tensor.shape[-1])

    def lookup(self, name: str, key: str | None) -> tuple[Any | None, str]:
        """ComfyUI's lookup of the word after ``embedding:``: the tensor (or None) and text left over — a name with
        trailing commas (``embedding:x,``) is tried as written, then without them (the commas are left over)."""
        found = self.get(name, key)
        if found is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                return (self.get(stripped, key) if stripped else None), name[len(stripped):]
        return found, ""
