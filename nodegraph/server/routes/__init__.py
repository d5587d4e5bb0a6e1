"""Route modules, one per concern; each exposes ``routes`` (a RouteTableDef) mounted at ``/`` and ``/api``."""

from __future__ import annotations

from typing import Iterable

from aiohttp import web

API_PREFIX = "/api"


def _prefixed(route: web.AbstractRouteDef, prefix: str) -> web.AbstractRouteDef:
    if isinstance(route, web.RouteDef):
        kwargs = {k: v for k, v in route.kwargs.items() if k != "name"}  # route names must stay unique
        return web.RouteDef(route.method, prefix + route.path, route.handler, kwargs)
    if isinstance(route, web.StaticDef):
        return web.StaticDef(prefix + route.prefix, route.path, dict(route.kwargs))
    raise TypeError(f"cannot mount {route!r}; return aiohttp RouteDef or StaticDef objects")


def mount(app: web.Application, routes: Iterable[web.AbstractRouteDef], prefixes: Iterable[str] = ("", API_PREFIX),
          ) -> None:
    """Register every route once per prefix (ComfyUI serves each route both at / and under /api)."""
    routes = list(routes)
    for prefix in prefixes:
        for route in routes:
            (_prefixed(route, prefix) if prefix else route).register(app.router)


def core_routes() -> list[web.RouteTableDef]:
    """The built-in route tables, in registration order."""
    from . import catalogue, files, frontend, jobs, meta, prompt, userdata, ws

    # frontend before files: its /extensions/core/ shims must win over files' /extensions/{plugin}/ route.
    return [prompt.routes, jobs.routes, userdata.routes, frontend.routes, files.routes, catalogue.routes, ws.routes,
            meta.routes]


def frontend_routes() -> list[web.AbstractRouteDef]:
    """The editor's page and static files: mount at ``/`` only, after every other route, so they shadow none."""
    from . import frontend

    return [*frontend.static_routes, *frontend.static_files()]
