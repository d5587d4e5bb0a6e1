"""Plugin discovery through pluggy and the node catalogue built from what the hooks return."""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .node import NodeDef, describe

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodegraph"
#: The built-in packs: ordinary plugins registered first (core features are plugins). The repository keeps them in
#: ``nodes/``, which installs as the subpackage ``nodegraph.nodes`` (no top-level ``nodes`` to collide with another
#: tool's); a pack keeps the plugin name ``nodes.<pack>``, which is also the ``python_module`` the editor groups as
#: core nodes.
BUILTIN_PACKS = ("nodes.utils", "nodes.image_io", "nodes.loaders", "nodes.conditioning", "nodes.sampling",
                 "nodes.latent", "nodes.image_ops", "nodes.upscaling", "nodes.shapes")
BUILTIN_PARENT = "nodegraph"
#: The folder of drop-in plugins in nodegraph's home (``HOME/plugins``).
HOME_PLUGINS = "plugins"
_CHECKOUT_NAME = re.compile(r'^name\s*=\s*"nodegraph"\s*$', re.MULTILINE)


def builtin_module(pack: str) -> str:
    """The importable module of a built-in pack (``nodes.loaders`` → ``nodegraph.nodes.loaders``)."""
    return f"{BUILTIN_PARENT}.{pack}"


def source_plugins_dir() -> Path | None:
    """The repository's ``plugins/`` folder when nodegraph runs from a source checkout (never from a wheel)."""
    root = Path(__file__).resolve().parent.parent
    try:
        is_checkout = bool(_CHECKOUT_NAME.search((root / "pyproject.toml").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return None
    return root / "plugins" if is_checkout and (root / "plugins").is_dir() else None


@dataclass
class PluginInfo:
    """One plugin as discovered: where it came from, what it registered, and what went wrong."""

    name: str
    source: str  # "builtin", "entrypoint" or a folder path
    version: str | None = None
    nodes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the plugin loaded without any error."""
        return not self.errors


def _nodegraph_version() -> str:
    try:
        return importlib.metadata.version("nodegraph")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Registry:
    """The plugin manager plus the node catalogue; build one with ``Registry.load`` and pass it around."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.nodes: dict[str, NodeDef] = {}
        self.plugins: dict[str, PluginInfo] = {}

    # ---- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, plugin_dirs: Iterable[Path] = (), *, builtins: Iterable[str] = BUILTIN_PACKS,
             entry_points: bool = True, source_plugins: bool = True, extra: Iterable[object] = ()) -> "Registry":
        """Discover built-in packs, entry-point plugins and folder plugins, and build the catalogue."""
        reg = cls()
        version = _nodegraph_version()
        for pack in builtins:
            reg._register_module(pack, "builtin", lambda m=builtin_module(pack): importlib.import_module(m), version)
        if entry_points and os.environ.get("NODEGRAPH_DISABLE_ENTRYPOINTS") != "1":
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                dist_version = ep.dist.version if ep.dist is not None else None
                reg._register_module(ep.name, "entrypoint", ep.load, dist_version)
        source = source_plugins_dir() if source_plugins else None
        dirs = ([source] if source is not None else []) + list(plugin_dirs)
        for folder in dirs:
            for name, path in _folder_plugins(Path(folder)):
                reg._register_module(name, str(folder), lambda p=path, n=name: _import_path(n, p), None)
        for i, obj in enumerate(extra):
            name = getattr(obj, "__name__", f"extra{i}")
            reg._register_module(name, "extra", lambda o=obj: o, None)
        reg._collect_nodes()
        return reg

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> "Registry":
        """``load`` with the drop-in folders of ``config``: ``HOME/plugins``, then ``--plugin-dir``/``$NODEGRAPH_PLUGIN_PATH``."""
        dirs = [Path(config.home) / HOME_PLUGINS, *config.plugin_dirs]
        return cls.load(list(dict.fromkeys(dirs)), **kwargs)

    def _register_module(self, name: str, source: str, loader: Any, version: str | None) -> None:
        info = self.plugins.setdefault(name, PluginInfo(name=name, source=source, version=version))
        if info.source != source:  # same name from two places: keep the first, report the second
            dup = f"{name}@{source}"
            self.plugins[dup] = PluginInfo(name=dup, source=source, version=version,
                                           errors=[f"a plugin named {name!r} is already loaded from {info.source}"])
            return
        try:
            module = loader()
            self.pm.register(module, name=name)
        except Exception as exc:  # one broken plugin must not stop the engine
            info.errors.append(f"Error importing plugin {name!r}: {_short_error(exc)}")
            log.error("plugin %s (%s) failed to load: %s", name, source, _short_error(exc))

    def _collect_nodes(self) -> None:
        for impl in self.pm.hook.nodegraph_nodes.get_hookimpls():  # registration order
            info = self.plugins.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "unknown")
            try:
                classes = impl.function() or []
            except Exception as exc:
                info.errors.append(f"nodegraph_nodes() raised {_short_error(exc)}")
                log.error("plugin %s: nodegraph_nodes() failed: %s", info.name, _short_error(exc))
                continue
            for node_cls in classes:
                self._add_node(node_cls, info)

    def _add_node(self, node_cls: Any, info: PluginInfo) -> None:
        try:
            meta = describe(node_cls, module=info.name if info.source == "builtin" else None)
        except Exception as exc:
            info.errors.append(f"invalid node {getattr(node_cls, '__name__', node_cls)!r}: {exc}")
            return
        existing = self.nodes.get(meta.name)
        if existing is not None:
            info.errors.append(f"node {meta.name!r} is already registered by plugin {existing.plugin!r}; "
                               f"rename it (set NAME) to load both")
            log.error("plugin %s: duplicate node %s (kept the one from %s)", info.name, meta.name, existing.plugin)
            return
        self.nodes[meta.name] = NodeDef(cls=node_cls, meta=meta, plugin=info.name, plugin_version=info.version)
        info.nodes.append(meta.name)

    # ---- queries -------------------------------------------------------------------------------------------------

    def get(self, name: str) -> NodeDef | None:
        """The node registered under ``name``, or None."""
        return self.nodes.get(name)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Close matches for an unknown node name."""
        lowered = {k.lower(): k for k in self.nodes}
        return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]

    def object_info(self, config: Any = None) -> dict[str, Any]:
        """The whole catalogue in the shape of ComfyUI's ``GET /object_info``."""
        return {name: d.catalogue_entry(config) for name, d in self.nodes.items()}

    def model_folders(self) -> dict[str, list[str]]:
        """Model folder kinds and their file extensions: the built-in ones plus those plugins add."""
        from .config import MODEL_FOLDERS

        folders: dict[str, list[str]] = {name: [".safetensors"] for name in MODEL_FOLDERS}
        for _, result in self.hook_results("nodegraph_model_folders"):
            for name, exts in dict(result).items():
                folders.setdefault(str(name), [])
                folders[str(name)] += [e for e in exts if e not in folders[str(name)]]
        return folders

    def link_types(self) -> dict[str, str]:
        """Link types declared by plugins ({TYPE: description}); the built-in ones are in nodegraph.inputs."""
        from .inputs import LINK_TYPES

        types = {t: "built-in" for t in LINK_TYPES}
        for _, result in self.hook_results("nodegraph_types"):
            types.update({str(k): str(v) for k, v in dict(result).items()})
        return types

    def web_directories(self) -> dict[str, str]:
        """{plugin name: folder of JavaScript extensions for the editor}."""
        return {name: str(folder) for name, folder in self.hook_results("nodegraph_web_directory") if folder}

    def routes(self, config: Any) -> list[tuple[str, Any]]:
        """(plugin name, [aiohttp RouteDef]) pairs added by plugins."""
        return self.hook_results("nodegraph_routes", config=config)

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(plugin, error) pairs for every plugin problem found while loading."""
        return [(p.name, e) for p in self.plugins.values() for e in p.errors]

    def hook_results(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call another hook plugin by plugin, isolating failures: [(plugin_name, result)]."""
        out: list[tuple[str, Any]] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                result = impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as exc:
                log.error("plugin %s: %s() failed: %s", impl.plugin_name, hook, _short_error(exc))
                self.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, "unknown")).errors.append(
                    f"{hook}() raised {_short_error(exc)}")
                continue
            if result is not None:
                out.append((impl.plugin_name, result))
        return out


def _folder_plugins(folder: Path) -> list[tuple[str, Path]]:
    """Modules (``x.py``) and packages (``x/__init__.py``) directly inside ``folder``."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" and path.stem.isidentifier():
            found.append((path.stem, path))
        elif path.is_dir() and path.name.isidentifier() and (path / "__init__.py").exists():
            found.append((path.name, path / "__init__.py"))
    return found


def _import_path(name: str, path: Path) -> ModuleType:
    """Import a drop-in plugin file or package under a private module name."""
    mod_name = f"nodegraph_plugins.{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    is_pkg = path.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(
        mod_name, path, submodule_search_locations=[str(path.parent)] if is_pkg else None)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module
