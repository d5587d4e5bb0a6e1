"""pytest fixtures for testing nodegraph plugins (and nodegraph itself); loaded automatically through ``pytest11``.

Installing nodegraph makes these fixtures available to every pytest run (disable with ``-p no:nodegraph``):

``nodegraph_config``
    An ``EngineConfig`` whose home is a fresh temporary folder (input/, output/, temp/, models/ created).
``make_registry(*extra, builtins=BUILTIN_PACKS)``
    A ``Registry`` with the built-in packs plus ``extra``: node classes, plugin modules, or folders of drop-in
    plugins. Entry points and the source checkout's ``plugins/`` are left out, so results do not depend on what else
    is installed (pass ``entry_points=True`` to include them).
``nodegraph_plugins`` / ``registry``
    The extra plugins the ``registry`` and ``engine`` fixtures include: none, until a conftest overrides it (e.g.
    ``return (my_plugin_module, Path(__file__).parent / "plugins")``). ``registry`` is ``make_registry`` of them.
``make_engine(*extra, config=None, **engine_kwargs)`` / ``engine``
    An ``Engine`` on ``nodegraph_config`` over ``make_registry(*extra)``; its sampler table includes the samplers the
    plugins declare. Plugin folders in ``extra`` are also added to the engine config's ``plugin_dirs`` (on a copy), so
    worker processes load them as ``nodegraph serve --plugin-dir`` would. ``engine`` is one with the built-in packs
    plus ``nodegraph_plugins``.
``run_graph(engine, prompt)``
    Validate and run an API-format prompt; returns the ``RunResult`` (raises when the run failed).
``nodegraph_server(engine, **settings)``
    A real nodegraph server on a free loopback port, in a background thread; returns its base URL
    (``http://127.0.0.1:PORT``). Stopped at the end of the test.
``tiny_checkpoint``
    A tiny random-weight SD1.x checkpoint built from configs (seconds on a CPU, no download), saved once per session
    as ``models/checkpoints/tiny-sd.safetensors`` (+ the ``tiny-sd/`` diffusers folder) in its own home folder;
    a ``TinyCheckpoint`` with ``home``, ``models_dir``, ``name``, ``config``, ``single_file`` and ``folder``. Point
    an engine at it with ``make_engine(config=tiny_checkpoint.config)``.

Tests that take seconds are marked ``@pytest.mark.slow``; ``pytest -m "not slow"`` is the quick loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:  # imported when a fixture is used: loading this plugin costs every pytest run nothing
    from .config import EngineConfig
    from .engine import Engine
    from .executor import RunResult
    from .node import Node
    from .registry import Registry


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker for plugin test suites that use it."""
    config.addinivalue_line("markers", "slow: takes seconds (deselect with -m \"not slow\" for a quick loop)")


def plugin_module(*nodes: type[Node], name: str = "nodegraph_test_nodes", **attrs: Any) -> types.ModuleType:
    """A plugin module providing ``nodes`` (and module attributes such as ``NODEGRAPH_SAMPLERS``)."""
    from .hookspecs import hookimpl

    module = types.ModuleType(name)
    listed = list(nodes)
    module.nodegraph_nodes = hookimpl(lambda: listed)  # type: ignore[attr-defined]
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def load_plugin_file(path: Path | str, name: str | None = None) -> types.ModuleType:
    """Import a drop-in plugin file as module ``name`` (its stem by default), as nodegraph would load it."""
    import importlib.util
    import sys

    path = Path(path)
    name = name or path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that its classes pickle (worker processes) and tests can import it by name
    spec.loader.exec_module(module)
    return module


def build_registry(*extra: Any, builtins: tuple[str, ...] | None = None, entry_points: bool = False) -> Registry:
    """A registry of ``builtins`` (default: all built-in packs) plus ``extra`` (node classes, plugin modules, or
    plugin folders)."""
    from .node import Node
    from .registry import BUILTIN_PACKS, Registry

    builtins = BUILTIN_PACKS if builtins is None else builtins
    classes = [e for e in extra if isinstance(e, type) and issubclass(e, Node)]
    folders = [Path(e) for e in extra if isinstance(e, (str, Path))]
    modules = [e for e in extra if not (isinstance(e, type) and issubclass(e, Node)) and e not in folders
               and not isinstance(e, (str, Path))]
    if classes:
        modules.append(plugin_module(*classes))
    return Registry.load(folders, builtins=builtins, entry_points=entry_points, source_plugins=False, extra=modules)


def build_engine(config: EngineConfig, registry: Registry, **engine_kwargs: Any) -> Engine:
    """An engine over ``registry`` whose sampler table holds the samplers its plugins declare."""
    from .diffusion.custom import install_samplers
    from .engine import Engine

    engine = Engine(config, registry=registry, **engine_kwargs)
    install_samplers(engine.config, engine.registry)
    return engine


def run_graph(engine: Engine, prompt: dict[str, Any], **run_kwargs: Any) -> RunResult:
    """Validate and run an API-format prompt on ``engine``; raises AssertionError naming the failure."""
    result = engine.run(engine.prepare(prompt), **run_kwargs)
    error = getattr(result, "error", None)
    if error:
        raise AssertionError(f"the run failed: {error}")
    return result


#: What a source tree may hold from earlier builds or runs; left out when a wheel is built from a copy.
BUILD_LEFTOVERS = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                         ".mypy_cache", ".home", "runs", "artifacts")


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a command and return its stdout; fail the test with the tail of its output when it exits non-zero."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def build_wheel(source: Path, workdir: Path, env: dict[str, str] | None = None,
                ignore: Callable[..., Any] = BUILD_LEFTOVERS) -> Path:
    """Build the wheel of the project in ``source`` from a clean copy (no stale build/ or egg-info) in ``workdir``."""
    copy, dist = workdir / "src", workdir / "dist"
    shutil.copytree(source, copy, ignore=ignore)
    run_checked([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                 str(copy)], workdir, env)
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture
def nodegraph_config(tmp_path: Path) -> EngineConfig:
    """An EngineConfig on a fresh temporary home folder (folders created)."""
    from .config import EngineConfig

    cfg = EngineConfig(home=tmp_path / "home")
    cfg.ensure_dirs()
    return cfg


@pytest.fixture
def make_registry() -> Callable[..., Registry]:
    """Factory: ``make_registry(*extra, builtins=BUILTIN_PACKS)`` → a Registry (see ``build_registry``)."""
    return build_registry


@pytest.fixture
def make_engine(nodegraph_config: EngineConfig) -> Callable[..., Engine]:
    """Factory: ``make_engine(*extra, config=None, builtins=…, **engine_kwargs)`` → an Engine."""
    def factory(*extra: Any, config: EngineConfig | None = None, builtins: tuple[str, ...] | None = None,
                **engine_kwargs: Any) -> Engine:
        config = _with_plugin_dirs(config or nodegraph_config, [Path(e) for e in extra if isinstance(e, (str, Path))])
        return build_engine(config, build_registry(*extra, builtins=builtins), **engine_kwargs)
    return factory


def _with_plugin_dirs(config: EngineConfig, folders: list[Path]) -> EngineConfig:
    """``config``, or a copy whose ``plugin_dirs`` also name ``folders`` (worker processes load plugins from it)."""
    if all(folder in config.plugin_dirs for folder in folders):
        return config
    copy = dataclasses.replace(config)
    copy.plugin_dirs = list(dict.fromkeys([*config.plugin_dirs, *folders]))
    return copy


@pytest.fixture
def nodegraph_plugins() -> tuple[Any, ...]:
    """The extra plugins (node classes, modules, folders) of ``registry`` and ``engine``: none; override to add yours."""
    return ()


@pytest.fixture
def registry(make_registry: Callable[..., Registry], nodegraph_plugins: tuple[Any, ...]) -> Registry:
    """A Registry with the built-in packs plus ``nodegraph_plugins``."""
    return make_registry(*nodegraph_plugins)


@pytest.fixture
def engine(make_engine: Callable[..., Engine], nodegraph_plugins: tuple[Any, ...]) -> Engine:
    """An Engine with the built-in packs plus ``nodegraph_plugins`` on a temporary home."""
    return make_engine(*nodegraph_plugins)


@pytest.fixture(name="run_graph")
def run_graph_fixture() -> Callable[..., RunResult]:
    """``run_graph(engine, prompt)``: validate and run, raising when the run failed."""
    return run_graph


class _ServerThread:
    """An aiohttp server for one engine on its own event loop in a daemon thread."""

    def __init__(self, engine: Engine, settings: Any) -> None:
        self.engine, self.settings = engine, settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.url = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="nodegraph-test-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the test by start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    async def _start(self) -> None:
        from aiohttp import web

        from .server import create_app

        self.runner = web.AppRunner(create_app(self.engine, self.settings))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> str:
        self.thread.start()
        if not self.ready.wait(60) or self.error is not None:
            raise RuntimeError(f"the test server did not start: {self.error!r}")
        return self.url

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def nodegraph_server() -> Iterator[Callable[..., str]]:
    """Factory: ``nodegraph_server(engine, **ServerSettings fields)`` → base URL of a running loopback server."""
    from .server import ServerSettings

    started: list[_ServerThread] = []

    def start(engine: Engine, **settings: Any) -> str:
        server = _ServerThread(engine, ServerSettings(**settings))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@dataclass
class TinyCheckpoint:
    """A tiny SD1.x checkpoint saved in its own home folder."""

    home: Path
    models_dir: Path
    name: str
    config: EngineConfig

    @property
    def single_file(self) -> Path:
        """The LDM single-file checkpoint (``models/checkpoints/tiny-sd.safetensors``)."""
        return self.models_dir / "checkpoints" / self.name

    @property
    def folder(self) -> Path:
        """The same model as a diffusers folder (``models/checkpoints/tiny-sd/``)."""
        return self.models_dir / "checkpoints" / Path(self.name).stem


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    """A tiny random-weight SD1.x checkpoint (``tiny-sd.safetensors``), built once per session."""
    from ._tiny import build_tiny_sd

    tiny = build_tiny_sd(tmp_path_factory.mktemp("nodegraph-tiny"))
    return TinyCheckpoint(home=tiny.home, models_dir=tiny.models_dir, name=tiny.single_file.name,
                          config=tiny.config)
