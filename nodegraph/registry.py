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
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .linktypes import LinkTypes
from .node import NodeDef, describe

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nodegraph"
#: The built-in packs: ordinary plugins registered first (core features are plugins). The repository keeps them in
#: ``nodes/``, which installs as the subpackage ``nodegraph.nodes`` (no top-level ``nodes`` to collide with another
#: tool's); a pack keeps the plugin name ``nodes.<pack>``, which is also the ``python_module`` the editor groups as
#: core nodes.
BUILTIN_PACKS = ("nodes.utils", "nodes.image_io", "nodes.loaders", "nodes.conditioning", "nodes.sampling",
                 "nodes.latent", "nodes.image_ops", "nodes.upscaling", "nodes.shapes", "nodes.api_nodes")
BUILTIN_PACKS += ("nodes.batches", "nodes.logic")  # lists and batches, lazy switches
BUILTIN_PACKS += ("nodes.masks", "nodes.compositing", "nodes.latent_ops")  # issue #14 tensor nodes
BUILTIN_PACKS += ("nodes.custom_sampling", "nodes.controlnet", "nodes.model_merging", "nodes.split_loaders",
                  "nodes.flux", "nodes.video", "nodes.training", "nodes.diffusion_explained")
BUILTIN_PACKS += ("nodes.latent_io",)  # latent files, tiled VAE, inpaint conditioning
BUILTIN_PACKS += ("nodes.model_patches", "nodes.vision")
BUILTIN_PACKS += ("nodes.sd3", "nodes.wan", "nodes.qwen", "nodes.ltx")  # issue #15/#16 model families
BUILTIN_PACKS += ("nodes.flux2", "nodes.lumina", "nodes.hidream", "nodes.cosmos", "nodes.hunyuan", "nodes.ltx2")
BUILTIN_PACKS += ("nodes.svd", "nodes.stable_cascade")  # Stable Video Diffusion, Stable Cascade
BUILTIN_PACKS += ("nodes.mochi",)
BUILTIN_PACKS += ("nodes.strings", "nodes.numbers")  # utility nodes of the official templates
BUILTIN_PARENT = "nodegraph"
#: The folder of drop-in plugins in nodegraph's home (``HOME/plugins``).
HOME_PLUGINS = "plugins"
_CHECKOUT_NAME = re.compile(r'^name\s*=\s*"nodegraph"\s*$', re.MULTILINE)


def builtin_module(pack: str) -> str:
    """The importable module of a built-in pack (``nodes.loaders`` → ``nodegraph.nodes.loaders``)."""
    return f"{BUILTIN_PARENT}.{pack}"


def source_plugins_dir(root: Path | None = None) -> Path | None:
    """The repository's ``plugins/`` folder when nodegraph runs from a source checkout (never from a wheel).

    ``root`` is the folder holding the ``nodegraph`` package: a checkout when its ``pyproject.toml`` names the
    project nodegraph (installed, it is site-packages, whose ``plugins/`` may belong to another tool).
    """
    root = Path(__file__).resolve().parent.parent if root is None else Path(root)
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
        #: Nodes left out of the catalogue because computing their entry raised: {node name: the error}.
        self.broken: dict[str, str] = {}
        self.types = LinkTypes()
        self._lock = threading.Lock()

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
        reg._check_pending()
        reg._collect_nodes()
        for plugin, declared in reg.hook_results("nodegraph_types"):
            for problem in reg.types.declare(plugin, declared):
                reg._error(plugin, problem)
        return reg

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> "Registry":
        """``load`` with the drop-in folders of ``config``: ``HOME/plugins``, then ``--plugin-dir`` and
        ``$NODEGRAPH_PLUGIN_PATH``."""
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
        except KeyboardInterrupt:  # the operator's Ctrl-C still stops the start-up
            raise
        except BaseException as exc:  # one broken plugin (even one calling sys.exit) must not stop the engine
            hint = (" (a plugin must not exit the process at import; remove the exit call)"
                    if isinstance(exc, SystemExit) else "")
            self._error(name, f"Error importing plugin {name!r}: {_short_error(exc)}{hint}")
            return
        try:
            self.pm.register(module, name=name)
        except pluggy.PluginValidationError as exc:  # e.g. a hook taking a parameter its hookspec does not have
            self._error(name, f"{' '.join(str(exc).split())}; a hook may take only the parameters "
                              "nodegraph.hookspecs declares for it")
            return
        except ValueError as exc:  # the same module under two names (two entry points naming one module)
            self._error(name, f"cannot register plugin {name!r}: {exc}")
            return
        for problem in _unmarked_hooks(module):
            self._error(name, problem)

    def _check_pending(self) -> None:
        """pluggy's ``check_pending``, reported per plugin: every hook implementation must match a hookspec."""
        try:
            self.pm.check_pending()
            return
        except pluggy.PluginValidationError:
            pass  # it names only the first; report them all below
        for hook, caller in sorted(vars(self.pm.hook).items()):
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    self._error(impl.plugin_name, _unknown_hook_message(hook))

    def _collect_nodes(self) -> None:
        for plugin, classes in self.hook_results("nodegraph_nodes"):  # registration order
            info = self.plugins.setdefault(plugin, PluginInfo(plugin, "unknown"))
            if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
                self._error(plugin, f"nodegraph_nodes() returned {type(classes).__name__}; return a list of "
                                    "nodegraph.Node subclasses")
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

    def _error(self, plugin: str, message: str) -> None:
        """Record a problem against a plugin (shown by ``nodegraph plugins``) and log it."""
        info = self.plugins.setdefault(plugin, PluginInfo(plugin, "unknown"))
        if message not in info.errors:
            info.errors.append(message)
            log.error("plugin %s (%s): %s", plugin, info.source, message)

    # ---- queries -------------------------------------------------------------------------------------------------

    def get(self, name: str) -> NodeDef | None:
        """The node registered under ``name``, or None."""
        return self.nodes.get(name)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Close matches for an unknown node name."""
        lowered = {k.lower(): k for k in self.nodes}
        return [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]

    def catalogue_entry(self, name: str, config: Any = None) -> dict[str, Any] | None:
        """One node's ``/object_info`` entry, or None when the node is unknown or its entry cannot be computed
        (then it is marked broken and its plugin names the error)."""
        d = self.nodes.get(name)
        if d is None:
            return None
        try:
            entry = d.catalogue_entry(config)
        except Exception as exc:  # e.g. a combo's options provider raising: leave the node out, not the catalogue
            message = (f"node {name!r} is left out of the catalogue (the editor cannot show it): its entry raised "
                       f"{_short_error(exc)}; fix the input's options in the plugin, or `nodegraph plugins` to check")
            with self._lock:
                if self.broken.get(name) != message:
                    self._drop_broken(name)
                    self.broken[name] = message
                    self._error(d.plugin, message)
            return None
        if name in self.broken:
            with self._lock:
                self._drop_broken(name)
        return entry

    def _drop_broken(self, name: str) -> None:
        message = self.broken.pop(name, None)
        info = self.plugins.get(self.nodes[name].plugin)
        if message is not None and info is not None and message in info.errors:
            info.errors.remove(message)

    def object_info(self, config: Any = None) -> dict[str, Any]:
        """The whole catalogue in the shape of ComfyUI's ``GET /object_info`` (broken nodes left out)."""
        entries = ((name, self.catalogue_entry(name, config)) for name in list(self.nodes))
        return {name: entry for name, entry in entries if entry is not None}

    def check_catalogue(self, config: Any = None) -> dict[str, str]:
        """Compute every catalogue entry once; ``{node: error}`` for those that cannot be shown (see ``broken``)."""
        self.object_info(config)
        return dict(self.broken)

    def model_folders(self, config: Any = None) -> dict[str, list[str]]:
        """Model folder kinds and the file extensions the loaders accept, from the one table
        (``nodegraph.models.folders``): built-in kinds plus plugins'; pickle formats only with
        ``config.allow_unsafe_pickle``."""
        from .models import folders

        return {kind: list(folders.extensions(kind, config, self)) for kind in folders.kinds(self)}

    def link_types(self) -> dict[str, str]:
        """Link types: the built-in ones (described "built-in") and those plugins declare ({TYPE: description})."""
        return self.types.descriptions()

    def types_compatible(self, output_type: str, input_type: str) -> bool:
        """True when an output of ``output_type`` may feed an input of ``input_type`` (plugins' subtypes too)."""
        return self.types.compatible(output_type, input_type)

    def web_directories(self) -> dict[str, Path]:
        """{plugin name: existing folder of JavaScript extensions for the editor}."""
        return {name: Path(folder) for name, folder in self.hook_results("nodegraph_web_directory")
                if isinstance(folder, (str, os.PathLike)) and Path(folder).is_dir()}

    def routes(self, config: Any, app: Any = None, engine: Any = None) -> list[tuple[str, Any]]:
        """(plugin name, [aiohttp RouteDef]) pairs added by plugins for the application ``app``."""
        return self.hook_results("nodegraph_routes", app=app, engine=engine, config=config)

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(plugin, error) pairs for every plugin problem found while loading."""
        return [(p.name, e) for p in self.plugins.values() for e in p.errors]

    def hook_results(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a hook plugin by plugin through pluggy, isolating failures: ``[(plugin_name, result)]``.

        Each plugin's implementation runs through ``subset_hook_caller`` with every hook wrapper around it, so
        wrappers work and one plugin's exception is recorded against it without losing the others' answers.
        """
        caller = getattr(self.pm.hook, hook)
        impls = caller.get_hookimpls()
        plain = [impl for impl in impls if not (impl.hookwrapper or impl.wrapper)]
        out: list[tuple[str, Any]] = []
        for impl in plain:  # registration order
            others = [o.plugin for o in plain if o is not impl]
            one = self.pm.subset_hook_caller(hook, remove_plugins=others) if others else caller
            try:
                results = one(**kwargs)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                culprit = _culprit(exc, impls) or impl.plugin_name
                self._error(culprit, f"{hook}() raised {_short_error(exc)}")
                continue
            out += [(impl.plugin_name, r) for r in results if r is not None]
        return out


def _culprit(exc: BaseException, impls: list[pluggy.HookImpl]) -> str | None:
    """The plugin whose hook function raised ``exc`` (the innermost one on its traceback)."""
    codes = {getattr(i.function, "__code__", None): i.plugin_name for i in impls}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def _unknown_hook_message(hook: str) -> str:
    known = [n for n in vars(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_")]
    close = difflib.get_close_matches(hook, known, n=1)
    fix = f"rename it to {close[0]}" if close else f"implement one of {', '.join(known)}"
    return (f"{hook}() is not a nodegraph hook, so it would never be called: {fix} (see nodegraph.hookspecs), or "
            "mark a hook of your own @hookimpl(optionalhook=True)")


def _unmarked_hooks(plugin: object) -> list[str]:
    """Functions named like a hook that lack ``@hookimpl`` (pluggy ignores them silently)."""
    marker = f"{hookspecs.PROJECT}_impl"
    return [f"{name}() is not marked as a hook implementation, so it is never called: decorate it with "
            "@nodegraph.hookimpl" for name in dir(plugin)
            if name.startswith(f"{hookspecs.PROJECT}_") and hasattr(hookspecs, name)
            and callable(getattr(plugin, name, None)) and not hasattr(getattr(plugin, name), marker)]


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
