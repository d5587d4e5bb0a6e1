"""The visual editor: the official ComfyUI frontend (pip package ``comfyui-frontend-package``) served at ``/``,
plus the small routes it calls on start-up (i18n, experiment models, subgraphs) and the workflow templates.

``routes`` is mounted at ``/`` and ``/api`` like every core table; ``static_routes`` (index and the package's
static files) only at ``/`` and after the plugins' routes, so they never shadow an API path.
The frontend is GPL-3.0 (hence nodegraph's GPL-3.0-or-later license).
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from ...paths import safe_join
from ...workflow import WorkflowFormatError
from ..http import HTTPError, json_bytes, json_response
from ..state import ServerState, state

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
static_routes = web.RouteTableDef()

FRONTEND_PACKAGE = "comfyui_frontend_package"
#: Saved API-format workflows offered in the editor as templates: the repository's ``workflows/`` folder, installed
#: (wheel and editable alike) as the package data ``nodegraph.workflows``.
TEMPLATE_PACKAGE = "nodegraph.workflows"
TEMPLATE_MODULE = "nodegraph"
#: nodegraph's own editor extensions (e.g. opening the txt2img template instead of ComfyUI's default graph).
WEB_DIR = Path(__file__).resolve().parents[1] / "web"
CORE_EXTENSIONS_URL = "/extensions/nodegraph-core"  # a hyphen: no plugin (a Python module name) can take it
NO_CACHE = {"Cache-Control": "no-cache"}
THUMBNAIL_SUFFIXES = ("webp", "png", "jpg", "jpeg")
MISSING_PAGE = ("<!doctype html><title>nodegraph</title><p>The visual editor is not installed: "
                "<code>pip install comfyui-frontend-package</code> (the version pinned in nodegraph's "
                "pyproject.toml), then restart <code>nodegraph serve</code>. The API works without it.</p>")


@lru_cache(maxsize=1)
def static_dir() -> Path | None:
    """The frontend's static folder, or None when the package is not installed."""
    try:
        folder = Path(str(importlib.resources.files(FRONTEND_PACKAGE) / "static"))
    except (ModuleNotFoundError, TypeError):
        return None
    return folder if (folder / "index.html").is_file() else None


def core_extension_urls() -> list[str]:
    """URLs of nodegraph's own editor extensions (listed first by ``GET /extensions``)."""
    if static_dir() is None or not WEB_DIR.is_dir():
        return []
    return [f"{CORE_EXTENSIONS_URL}/{p.name}" for p in sorted(WEB_DIR.glob("*.js"))]


def template_dirs() -> dict[str, Path]:
    """Template module → folder of API-format ``.json`` workflows (package data, found with importlib.resources)."""
    try:
        folder = Path(str(importlib.resources.files(TEMPLATE_PACKAGE)))
    except (ModuleNotFoundError, TypeError):
        return {}
    return {TEMPLATE_MODULE: folder} if folder.is_dir() else {}


def template_names() -> dict[str, list[str]]:
    """``{module: [template names]}`` as ``GET /workflow_templates`` lists them."""
    return {module: sorted(p.stem for p in folder.glob("*.json")) for module, folder in template_dirs().items()}


# ---- start-up routes -------------------------------------------------------------------------------------------

@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    """Extra translations from nodes (none: the editor's own are bundled)."""
    return json_response({})


def _blueprints(st: ServerState) -> dict[str, Any]:
    from ...blueprints import global_blueprints

    return global_blueprints(st.engine.config, st.engine.registry)


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    """Subgraph blueprints from ``HOME/subgraphs``, plugins' ``subgraphs/`` folders and nodegraph's own, as
    ComfyUI lists them: ``{id: {source, name, info: {node_pack}}}`` (the editor fetches each one's data)."""
    st = state(request)
    found = await st.blocking(_blueprints, st)
    return json_response({key: blueprint.entry() for key, blueprint in found.items()})


@routes.get("/global_subgraphs/{id}")
async def global_subgraph(request: web.Request) -> web.Response:
    """One blueprint ``{source, name, info, data}`` (``data``: the workflow's JSON text); the id is looked up among
    the listed ones, never used as a path."""
    st = state(request)
    blueprint = (await st.blocking(_blueprints, st)).get(request.match_info["id"])
    if blueprint is None:
        raise HTTPError(404, "not_found", f"no global subgraph {request.match_info['id'][:80]!r}; "
                                          "GET /api/global_subgraphs lists them")
    try:
        return json_response(await st.blocking(blueprint.entry, True))
    except WorkflowFormatError as exc:
        raise HTTPError(404, "bad_blueprint", str(exc)) from None


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    """Model folder kinds for the editor's model library ``[{name, folders}]``."""
    from .catalogue import model_folders

    st = state(request)
    return json_response([{"name": name, "folders": [str(st.engine.config.model_dir(name))]}
                              for name in sorted(model_folders(st))])


@routes.get("/experiment/models/{folder}")
async def experiment_models_in(request: web.Request) -> web.Response:
    """Model files of one kind ``[{name, pathIndex}]``; 404 for an unknown kind."""
    from ...models import folders
    from .catalogue import model_folders

    st = state(request)
    exts = model_folders(st).get(request.match_info["folder"])
    if exts is None:
        raise HTTPError(404, "not_found", f"no model folder {request.match_info['folder']!r}")
    names = await st.blocking(folders.list_models, st.engine.config, request.match_info["folder"], st.engine.registry)
    return json_response([{"name": n, "pathIndex": 0} for n in names])


@routes.get("/templates/{name}")
async def core_templates(request: web.Request) -> web.Response:
    """The editor's built-in template index (``index.json``, ``index.LANG.json``): empty, ours are below."""
    if not request.match_info["name"].startswith("index"):
        raise HTTPError(404, "not_found", "no such template file")
    return json_response([])


# ---- workflow templates ------------------------------------------------------------------------------------------

@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    """``{module: [template names]}``: the project's saved workflows."""
    return json_response(await state(request).blocking(template_names))


def _template(st: ServerState, module: str, name: str) -> dict[str, Any]:
    from ...ui_export import api_to_ui

    folder = template_dirs().get(module)
    if folder is None:
        raise HTTPError(404, "not_found", f"no template module {module!r}")
    path = safe_join(folder, f"{name}.json")
    if not path.is_file():
        raise HTTPError(404, "not_found", f"no template {name!r} in {module!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return api_to_ui(data, st.engine.registry)
    except (ValueError, WorkflowFormatError) as exc:
        log.error("template %s/%s cannot be converted: %s", module, name, exc)
        raise HTTPError(500, "bad_template", f"template {name!r} cannot be shown: {exc}") from None


@routes.get("/workflow_templates/{module}/{file}")
async def workflow_template(request: web.Request) -> web.StreamResponse:
    """``NAME.json``: one template in the editor's UI format (converted with the catalogue); ``NAME.webp|png|jpg``:
    its thumbnail when the folder has one."""
    st = state(request)
    module, file = request.match_info["module"], request.match_info["file"]
    stem, _, suffix = file.rpartition(".")
    if suffix == "json":
        return json_bytes(await st.blocking(_template, st, module, stem))
    folder = template_dirs().get(module)
    path = safe_join(folder, file) if folder is not None and suffix in THUMBNAIL_SUFFIXES else None
    if path is None or not path.is_file():
        raise HTTPError(404, "not_found", f"no template file {file!r} in {module!r}")
    return web.FileResponse(path, headers=NO_CACHE)


# ---- editor extensions: the frontend's shims and nodegraph's own --------------------------------------------------

@routes.get("/extensions/core/{path:.+}")
async def core_extension(request: web.Request) -> web.StreamResponse:
    """The frontend's module shims that plugin extensions import (``../../extensions/core/*.js``)."""
    folder = static_dir()
    if folder is None:
        raise HTTPError(404, "not_found", "the visual editor is not installed")
    path = safe_join(folder / "extensions" / "core", *request.match_info["path"].split("/"))
    if not path.is_file():
        raise HTTPError(404, "not_found", "no such file")
    return web.FileResponse(path, headers={"Content-Type": "text/javascript", **NO_CACHE})


@routes.get(CORE_EXTENSIONS_URL + "/{name}")
async def nodegraph_extension(request: web.Request) -> web.StreamResponse:
    """One of nodegraph's own editor extensions."""
    path = safe_join(WEB_DIR, request.match_info["name"])
    if path.suffix != ".js" or not path.is_file():
        raise HTTPError(404, "not_found", "no such extension")
    return web.FileResponse(path, headers={"Content-Type": "text/javascript", **NO_CACHE})


# ---- the page and its static files (mounted at / only, last) ------------------------------------------------------

@static_routes.get("/user.css")
async def user_css(request: web.Request) -> web.Response:
    """The editor links a user stylesheet; answer an empty one rather than a 404 its console reports."""
    return web.Response(text="", content_type="text/css")


@static_routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    """The editor's page (or a note on how to install it)."""
    folder = static_dir()
    if folder is None:
        return web.Response(text=MISSING_PAGE, content_type="text/html", status=503)
    return web.FileResponse(folder / "index.html", headers={"Content-Type": "text/html", **NO_CACHE})


async def static_file(request: web.Request) -> web.StreamResponse:
    """One of the editor's static files; the name is decided by ``nodegraph.paths`` like every other path."""
    folder = static_dir()
    if folder is None:
        raise HTTPError(404, "not_found", "the visual editor is not installed")
    path = safe_join(folder, request.match_info["filename"])
    if not path.is_file():
        raise HTTPError(404, "not_found", f"no file {request.match_info['filename'][:80]!r}")
    return web.FileResponse(path)


def static_files() -> list[web.AbstractRouteDef]:
    """The frontend's assets at ``/{filename}`` (empty when the package is missing).

    A handler of ours rather than ``web.static``: aiohttp's static handler answers 500 for over-long names.
    """
    folder = static_dir()
    if folder is None:
        log.warning("comfyui-frontend-package is not installed: the visual editor is unavailable")
        return []
    return [web.get("/{filename:.+}", static_file)]
