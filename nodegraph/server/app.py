"""The application factory and the ``nodegraph serve`` entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING

from aiohttp import web

from .broadcast import Broadcaster
from .routes import core_routes, frontend_routes, mount
from .routes.files import FIELD_LIMIT
from .security import MIDDLEWARES
from .settings import MB, TOKEN_ENV, ServerSettings, check_token, resolve_token
from .state import STATE, ServerState
from .store import DamagedStoreError, QueueStore
from .store_recovery import recover_file
from .worker import Worker

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..config import EngineConfig
    from ..engine import Engine

log = logging.getLogger(__name__)
DATABASE = "queue.sqlite3"
#: The worker-process backend an app started itself (``ServerSettings.worker_process``); closed with the app.
OWN_BACKEND: web.AppKey["Backend"] = web.AppKey("nodegraph_own_backend")


def create_app(engine: "Engine", settings: ServerSettings | None = None,
               backend: "Backend | None" = None) -> web.Application:
    """Build the aiohttp application: routes at / and /api, plugin routes, and the queue worker's lifecycle.

    ``backend`` runs the prompts; the caller closes it. Without one, ``settings.worker_process`` chooses: a worker
    process started with the app and ended with it (what ``nodegraph serve`` uses), or this process (the default).
    Raises DamagedStoreError when the queue database cannot be read.
    """
    settings = settings or ServerSettings()
    engine.config.ensure_dirs()
    store = QueueStore(engine.config.user_dir / DATABASE, settings.max_pending, settings.max_history)
    broadcaster = Broadcaster()
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=settings.max_upload_bytes + FIELD_LIMIT)
    app[STATE] = ServerState(engine, settings, store, Worker(engine, store, broadcaster, backend), broadcaster)
    if backend is None and settings.worker_process:
        from ..backends.process import ProcessBackend

        own = ProcessBackend(engine.config, interrupt_grace_s=settings.interrupt_grace_s)
        app[OWN_BACKEND] = app[STATE].worker.backend = own
    for table in core_routes():
        mount(app, table)
    for plugin, routes in engine.registry.routes(engine.config, app=app, engine=engine):
        try:
            mount(app, routes)
        except Exception as exc:  # a plugin must not stop the server: report it and go on
            log.error("plugin %s: its routes could not be added: %s", plugin, exc)
            if plugin in engine.registry.plugins:
                engine.registry.plugins[plugin].errors.append(f"nodegraph_routes(): {exc}")
    mount(app, frontend_routes(), prefixes=("",))
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


class HomeInUseError(RuntimeError):
    """Another server process already serves this home folder."""


def _lock_home(st: ServerState) -> None:
    """Hold an exclusive lock on the queue for the app's lifetime (released by the OS even on kill -9)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one server per home is then the user's job
        return
    path = st.engine.config.user_dir / "server.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise HomeInUseError(f"another nodegraph server is using {st.engine.config.home}; stop it or start this "
                             "one with another --home") from None
    st.lock_handle = handle


async def _on_startup(app: web.Application) -> None:
    st = app[STATE]
    _lock_home(st)
    requeued, failed = await st.blocking(st.store.recover)
    for prompt_id in requeued:
        log.warning("prompt %s was running when the server stopped; it runs again first", prompt_id)
    for prompt_id in failed:
        log.error("prompt %s was running during two server stops; marked failed, not retried", prompt_id)
    st.worker.start(asyncio.get_running_loop())


async def _on_shutdown(app: web.Application) -> None:
    await app[STATE].broadcaster.close_all()


async def _on_cleanup(app: web.Application) -> None:
    st = app[STATE]
    own = app.get(OWN_BACKEND)
    if own is not None:  # end the worker process first: a prompt running there ends at once and is re-queued
        st.worker.signal_stop()
        await st.blocking(own.close)
    await st.blocking(st.worker.stop)
    if not st.worker.alive:
        st.store.close()
    if st.cpu is not None:
        st.cpu.close()
    if st.lock_handle is not None:
        st.lock_handle.close()
        st.lock_handle = None


def warm_up() -> None:
    """Import torch before listening when prompts run in this process: loading its native libraries holds the GIL
    for a few hundred milliseconds, which would stall the event loop if the first prompt triggered it under load.
    (The worker-process and Ray backends import torch in their workers only.) ``NODEGRAPH_WARMUP=0`` skips it."""
    if os.environ.get("NODEGRAPH_WARMUP", "1") == "0":
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        pass


def recover_store(config: "EngineConfig") -> int:
    """``serve --recover``: move a damaged queue database aside and keep what can be read; returns an exit code."""
    path = config.user_dir / DATABASE
    try:
        import fcntl

        with open(config.user_dir / "server.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
            done = recover_file(path)
    except ImportError:
        done = recover_file(path)
    except OSError:
        print(f"error: another nodegraph server is using {config.home}; stop it before --recover", file=sys.stderr)
        return 1
    if done.moved_to is None:
        print(f"recover: {path} is healthy; nothing to do", file=sys.stderr)
    else:
        print(f"recover: {path} was damaged; moved it to {done.moved_to} and started a fresh one with the "
              f"{done.salvaged} prompt(s) that could be read ({done.unreadable} unreadable row(s) skipped)",
              file=sys.stderr)
    return 0


def serve(config: "EngineConfig", listen: str = "127.0.0.1", port: int = 8188, token: str | None = None,
          max_upload_mb: int = 50, backend: str = "process", ray_address: str | None = None,
          interrupt_grace_s: float = 10.0, recover: bool = False, preview_method: str = "none") -> int:
    """Run the server until interrupted; returns the process exit code.

    ``backend``: ``process`` (a worker process, ended and restarted when a node ignores an interrupt for
    ``interrupt_grace_s`` seconds), ``local`` (this process) or ``ray``. ``recover`` first moves a damaged queue
    database aside, keeping what can be read. ``preview_method``: ``none`` (as ComfyUI: live previews only to clients
    that ask for them, like the editor), ``auto`` or ``latent2rgb`` (to every client).
    """
    from ..backends import create_backend
    from ..engine import Engine

    token, generated = resolve_token(listen, token)
    try:
        if not generated:
            check_token(token)
        settings = ServerSettings(listen=listen, port=port, token=token, max_upload_bytes=max_upload_mb * MB,
                                  argv=list(sys.argv), worker_process=backend == "process",
                                  interrupt_grace_s=interrupt_grace_s, preview_method=preview_method)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config.ensure_dirs()
    if recover and recover_store(config) != 0:
        return 1
    engine = Engine(config)
    for plugin, error in engine.registry.errors:
        print(f"warning: plugin {plugin}: {error}", file=sys.stderr)
    if backend == "local":  # prompts run in this process: pay torch's import before listening, not mid-request
        warm_up()
    runner = None
    if backend != "process":
        try:
            runner = create_backend(backend, engine, address=ray_address)
        except (RuntimeError, ValueError) as exc:  # Ray missing, cluster unreachable or too small
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        app = create_app(engine, settings, runner)
    except DamagedStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if runner is not None:
            runner.close()
        return 1
    if generated:
        print(f"auth token (required because {listen} is not loopback; set ${TOKEN_ENV} or --token to choose "
              f"one): {token}", flush=True)
    host = f"[{listen}]" if ":" in listen else listen

    def announce(_text: str) -> None:
        print(f"nodegraph server listening on http://{host}:{port} (home {config.home})", flush=True)

    try:
        web.run_app(app, host=listen, port=port, print=announce, access_log=None, handle_signals=True)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    except HomeInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        own = app.get(OWN_BACKEND)
        for b in (runner, own):
            if b is not None:
                b.close()
    return 0
