"""The one table of model folders and the file extensions each may hold: loaders, ``/models`` and validation use it.

A file is listed only if the loaders would load it: safetensors everywhere, pickle formats (which can run code when
unpickled) only when ``EngineConfig.allow_unsafe_pickle`` is set. Plugins add folders through the
``nodegraph_model_folders`` hook; pass the registry to include them. This module imports neither torch nor diffusers.

API::

    folders.kinds(registry)                       # ["checkpoints", "embeddings", "loras", ...]
    folders.extensions("loras", config)           # (".safetensors",) (+ pickle ones when allowed)
    folders.list_models(config, "checkpoints")    # relative file names and diffusers folders, sorted
    folders.check_listed(path, "vae", config)     # raise UnlistedModelError unless the loaders accept it
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: Extensions of files read with safetensors (never runs code).
SAFE_EXTENSIONS: tuple[str, ...] = (".safetensors",)
#: Extensions of pickle files: read only with ``allow_unsafe_pickle``.
PICKLE_EXTENSIONS: tuple[str, ...] = (".ckpt", ".pt", ".pth", ".bin")


class UnlistedModelError(ValueError):
    """A model file whose kind or extension the folder table does not accept."""


@dataclass(frozen=True)
class FolderKind:
    """One model folder: its name under ``models/``, the file extensions it holds, and diffusers folder markers."""

    name: str
    extensions: tuple[str, ...] = SAFE_EXTENSIONS
    #: A sub-folder holding one of these files is one model (a diffusers pipeline or component folder).
    folder_markers: tuple[str, ...] = ()
    #: Whether pickle files may be listed here when the user allows them.
    pickle: bool = True


BUILTIN: dict[str, FolderKind] = {
    "checkpoints": FolderKind("checkpoints", folder_markers=("model_index.json",)),
    "vae": FolderKind("vae", folder_markers=("config.json", "model_index.json")),
    "loras": FolderKind("loras"),
    "upscale_models": FolderKind("upscale_models"),
    "embeddings": FolderKind("embeddings"),
    # Split model files (ComfyUI's folder names; "unet" and "clip" are the older names of the two after them).
    "diffusion_models": FolderKind("diffusion_models", folder_markers=("config.json",)),
    "unet": FolderKind("unet", folder_markers=("config.json",)),
    "text_encoders": FolderKind("text_encoders", folder_markers=("config.json",)),
    "clip": FolderKind("clip", folder_markers=("config.json",)),
    "controlnet": FolderKind("controlnet", folder_markers=("config.json",)),
    "clip_vision": FolderKind("clip_vision", folder_markers=("config.json",)),
    "style_models": FolderKind("style_models"),
    "model_patches": FolderKind("model_patches", pickle=False),  # ModelPatchLoader (Z-Image Fun ControlNet)
    # CheckpointLoader's model configs (YAML, read with yaml.safe_load) and DiffusersLoader's pipeline folders.
    "configs": FolderKind("configs", extensions=(".yaml",), pickle=False),
    "diffusers": FolderKind("diffusers", extensions=(), folder_markers=("model_index.json",), pickle=False),
    "hypernetworks": FolderKind("hypernetworks"),
    # TAESD encoder/decoder pairs (VAELoader's taesd, taesdxl, taesd3, taef1; --preview-method taesd).
    "vae_approx": FolderKind("vae_approx"),
    "gligen": FolderKind("gligen"),  # GLIGENLoader's grounding models
    "latent_upscale_models": FolderKind("latent_upscale_models", pickle=False),  # LTX latent upsamplers
}


def table(registry: Any = None, on_error: Callable[[str, str], None] | None = None) -> dict[str, FolderKind]:
    """Every folder kind: the built-in ones plus those plugins add with ``nodegraph_model_folders``.

    A plugin's extensions are filtered like ours: pickle ones count only when the user allows pickles. A plugin
    whose hook returns something else than a dict is skipped and reported to ``on_error(plugin, message)``.
    """
    kinds = dict(BUILTIN)
    if registry is None:
        return kinds
    for plugin, result in registry.hook_results("nodegraph_model_folders"):
        if not isinstance(result, dict):
            if on_error is not None and result is not None:
                on_error(str(plugin), f"nodegraph_model_folders() returned {type(result).__name__}; return "
                                      "{folder_name: [extensions]}")
            continue
        for name, exts in result.items():
            name = str(name)
            old = kinds.get(name, FolderKind(name, extensions=()))
            extra = tuple(str(e).lower() if str(e).startswith(".") else "." + str(e).lower() for e in exts or ())
            merged = old.extensions + tuple(e for e in extra if e not in old.extensions)
            kinds[name] = FolderKind(name, merged, old.folder_markers, old.pickle)
    return kinds


def kinds(registry: Any = None) -> list[str]:
    """The folder kinds, sorted (``GET /models``)."""
    return sorted(table(registry))


def _pickle_allowed(config: Any) -> bool:
    return bool(getattr(config, "allow_unsafe_pickle", False))


def _spec(kind: str, registry: Any) -> FolderKind:
    """The folder kind ``kind`` (the table is built once per call, plugin hooks included); raises for unknown kinds."""
    folders = table(registry)
    spec = folders.get(kind)
    if spec is None:
        raise UnlistedModelError(f"no model folder {kind!r}; known folders: {', '.join(sorted(folders))}")
    return spec


def _allowed(spec: FolderKind, config: Any) -> tuple[str, ...]:
    exts = tuple(e for e in spec.extensions if e not in PICKLE_EXTENSIONS)
    if spec.pickle and _pickle_allowed(config):
        exts += tuple(e for e in PICKLE_EXTENSIONS if e not in exts)
    return exts


def extensions(kind: str, config: Any = None, registry: Any = None) -> tuple[str, ...]:
    """The extensions listed and loaded for ``kind``: pickle ones only when ``config.allow_unsafe_pickle``.

    Raises UnlistedModelError for an unknown kind.
    """
    return _allowed(_spec(kind, registry), config)


def _inside_model_folder(path: Path, root: Path, markers: tuple[str, ...]) -> bool:
    return any((parent / m).exists() for parent in path.parents if root in parent.parents for m in markers)


#: Listings of trees changed less than this long ago are not remembered (see ``ListingCache.get``).
RACY_NS = 2_000_000_000


class ListingCache:
    """Model listings remembered per folder until the folder tree changes (any directory's mtime: a file added,
    removed or renamed anywhere below it). Lives on the EngineConfig it lists for; pickles empty."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], tuple[tuple[tuple[str, int], ...], list[str]]] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ListingCache, ())

    @staticmethod
    def signature(root: Path) -> tuple[tuple[str, int], ...]:
        """Every directory under ``root`` with its mtime (no file is stat'ed)."""
        out = []
        for folder, _dirs, _files in os.walk(root):
            try:
                out.append((folder, os.stat(folder).st_mtime_ns))
            except OSError:
                continue
        return tuple(out)

    def get(self, key: tuple[Any, ...], root: Path, scan: Callable[[], list[str]]) -> list[str]:
        """The cached listing for ``key`` while ``root``'s tree is unchanged, else a new ``scan()``."""
        sig = self.signature(root)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == sig:
            return list(hit[1])
        found = scan()
        # A directory changed within the file system's timestamp granularity of the scan may change again without
        # a new mtime ("racy" entries, as git calls them): remember only listings of settled trees.
        if all(time.time_ns() - mtime > RACY_NS for _, mtime in sig):
            with self._lock:
                self._entries[key] = (sig, found)
        return list(found)


def listing_cache(config: Any) -> ListingCache:
    """The listing cache that belongs to ``config`` (created on first use)."""
    cache = getattr(config, "_model_listing", None)
    if cache is None:
        cache = ListingCache()
        try:
            object.__setattr__(config, "_model_listing", cache)
        except (AttributeError, TypeError):  # an object that takes no attributes: no caching
            pass
    return cache


def list_models(config: Any, kind: str, registry: Any = None) -> list[str]:
    """Loadable models of ``kind`` as names relative to ``models/<kind>``, sorted: files, then diffusers folders.

    Files inside a diffusers folder are not listed on their own; unknown kinds raise UnlistedModelError. The scan is
    remembered until a directory in the folder tree changes (validation and the combos ask often).
    """
    spec = _spec(kind, registry)
    exts = _allowed(spec, config)
    root = Path(config.model_dir(kind))
    if not root.is_dir():
        return []
    key = (kind, str(root), exts, spec.folder_markers)
    return listing_cache(config).get(key, root, lambda: _scan(root, exts, spec.folder_markers))


def _scan(root: Path, exts: tuple[str, ...], markers: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and path.suffix.lower() in exts:
            if not _inside_model_folder(path, root, markers):
                found.append(rel)
        elif path.is_dir() and any((path / m).exists() for m in markers):
            if not _inside_model_folder(path, root, markers):
                found.append(rel)
    return found


def check_listed(path: Path, kind: str, config: Any = None, registry: Any = None) -> None:
    """Raise UnlistedModelError unless ``path`` is a file (or diffusers folder) that ``kind`` lists."""
    path = Path(path)
    spec = _spec(kind, registry)
    exts = _allowed(spec, config)
    if path.is_dir():
        if any((path / m).exists() for m in spec.folder_markers):
            return
        raise UnlistedModelError(f"{path.name} is a folder without {' or '.join(spec.folder_markers) or 'a model'}; "
                                 f"models/{kind} takes {', '.join(exts)} files" +
                                 (" or diffusers folders" if spec.folder_markers else ""))
    suffix = path.suffix.lower()
    if suffix in exts:
        return
    if suffix in PICKLE_EXTENSIONS and spec.pickle:
        raise UnlistedModelError(f"{path.name} is a pickle file ({suffix}); loading pickles can run arbitrary code. "
                                 "Convert it to .safetensors, or start nodegraph with --allow-unsafe-pickle if you "
                                 "trust it")
    raise UnlistedModelError(f"{path.name} is not a file models/{kind} takes; use {', '.join(exts)}")


__all__ = ["SAFE_EXTENSIONS", "PICKLE_EXTENSIONS", "UnlistedModelError", "FolderKind", "BUILTIN", "table", "kinds",
           "extensions", "list_models", "check_listed"]
