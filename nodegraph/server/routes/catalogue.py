"""Catalogue and system routes: node catalogue, model folders, embeddings, features, system stats, extensions."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ... import __version__
from ...models import folders
from ..http import HTTPError, json_bytes, json_response
from ..state import ServerState, state

routes = web.RouteTableDef()

COMFYUI_COMPAT_VERSION = "0.3.60"


def model_folders(st: ServerState) -> dict[str, tuple[str, ...]]:
    """Model folder kinds with their file extensions, as the registry lists them (``nodegraph_model_folders``)."""
    return {name: tuple(exts) for name, exts in st.engine.registry.model_folders(st.engine.config).items()}


def web_directories(st: ServerState) -> dict[str, Path]:
    """Plugin name → folder of editor extensions, as the registry lists them (``nodegraph_web_directory``)."""
    return st.engine.registry.web_directories()


@routes.get("/object_info")
async def object_info(request: web.Request) -> web.Response:
    """The whole node catalogue (combos listed afresh, so new uploads and models appear); a node whose entry
    cannot be computed is left out and named by ``nodegraph plugins`` and the log."""
    st = state(request)
    return await st.blocking(lambda: json_bytes(st.engine.registry.object_info(st.engine.config)))


@routes.get("/object_info/{node_class}")
async def object_info_one(request: web.Request) -> web.Response:
    """``{class: entry}``, or ``{}`` for an unknown class (as ComfyUI answers)."""
    st = state(request)
    name = request.match_info["node_class"]
    entry = await st.blocking(st.engine.registry.catalogue_entry, name, st.engine.config)
    return json_response({} if entry is None else {name: entry})


@routes.get("/models")
async def models(request: web.Request) -> web.Response:
    """The model folder kinds."""
    return json_response(sorted(model_folders(state(request))))


@routes.get("/models/{folder}")
async def models_in(request: web.Request) -> web.Response:
    """Model files (relative paths) in one folder kind; 404 for an unknown kind."""
    st = state(request)
    folder = request.match_info["folder"]
    exts = model_folders(st).get(folder)
    if exts is None:
        raise HTTPError(404, "not_found", f"no model folder {folder!r}; GET /models lists them")
    return json_response(await st.blocking(folders.list_models, st.engine.config, folder, st.engine.registry))


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    """Embedding names (file stems)."""
    st = state(request)
    names = await st.blocking(folders.list_models, st.engine.config, "embeddings", st.engine.registry)
    return json_response([os.path.splitext(n)[0] for n in names])


def visible_files(folder: Path) -> list[str]:
    """Names of the plain, non-hidden files directly in ``folder``, newest first (ComfyUI's internal listing)."""
    try:
        entries = [e for e in os.scandir(folder) if e.is_file(follow_symlinks=False) and not e.name.startswith(".")]
    except OSError:
        return []
    return [e.name for e in sorted(entries, key=lambda e: -e.stat().st_mtime)]


@routes.get("/internal/files/{directory_type}")
async def internal_files(request: web.Request) -> web.Response:
    """Files of the input, output or temp folder, newest first (the editor's "Load Image (from Outputs)" list)."""
    st = state(request)
    kind = request.match_info["directory_type"]
    if kind not in ("input", "output", "temp"):
        raise HTTPError(400, "invalid_directory_type", f"no folder {kind!r}; use input, output or temp")
    return json_response(await st.blocking(visible_files, st.engine.config.folder_for(kind)))


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    """Server feature flags."""
    from .ws import server_flags

    return json_response(server_flags(state(request).settings))


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    """URLs of the editor's JavaScript extensions: nodegraph's own, then those provided by plugins."""
    from .frontend import core_extension_urls

    st = state(request)

    def scan() -> list[str]:
        return core_extension_urls() + sorted(f"/extensions/{plugin}/{p.relative_to(folder).as_posix()}"
                      for plugin, folder in web_directories(st).items() for p in folder.rglob("*.js") if p.is_file())
    return json_response(await st.blocking(scan))


def _memory() -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pages, free = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return pages * size, free * size


def _redacted_argv(argv: list[str]) -> list[str]:
    from ..settings import redact_argv  # --token X, --token=X, abbreviations, and $NODEGRAPH_TOKEN's value

    return redact_argv(list(argv))


def _system_stats(st: ServerState) -> dict[str, Any]:
    import torch

    total, free = _memory()
    devices: list[dict[str, Any]] = []
    if torch.cuda.is_available() and not st.engine.config.force_cpu:
        for i in range(torch.cuda.device_count()):
            free_v, total_v = torch.cuda.mem_get_info(i)
            devices.append({"name": torch.cuda.get_device_name(i), "type": "cuda", "index": i,
                            "vram_total": total_v, "vram_free": free_v, "torch_vram_total": total_v,
                            "torch_vram_free": free_v})
    else:
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                        "torch_vram_total": total, "torch_vram_free": free})
    return {"system": {"os": sys.platform, "ram_total": total, "ram_free": free,
                       "comfyui_version": COMFYUI_COMPAT_VERSION, "nodegraph_version": __version__,
                       "python_version": sys.version, "pytorch_version": torch.__version__,
                       "embedded_python": False, "argv": _redacted_argv(st.settings.argv or sys.argv),
                       "machine": platform.machine()},
            "devices": devices}


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    """``{system: {os, ram_total, ram_free, comfyui_version, python_version, pytorch_version, ...}, devices}``."""
    st = state(request)
    return json_response(await st.blocking(_system_stats, st))
