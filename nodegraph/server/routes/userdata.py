"""Editor settings and user files (saved workflows, keybindings, …) under the home's ``user/default`` folder.

One user (``default``), as a local ComfyUI has. Every path is decided by ``nodegraph.paths.safe_join`` (no ``..``,
no absolute or Windows paths, no links out, no NUL bytes, names capped in bytes and depth), files are capped in size
and the folder in file count. The queue database
and lock beside it in ``user/`` are out of reach: only ``user/default`` is served.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from ... import jsonsafe
from ...paths import UnsafePathError, safe_join
from ..http import HTTPError, json_response, read_body, read_json
from ..state import ServerState, state

routes = web.RouteTableDef()

USER = "default"
SETTINGS_FILE = "comfy.settings.json"
#: Applied under whatever the user saved: no tutorial dialog, and no call to an outside host for release notes.
SEEDED_SETTINGS: dict[str, Any] = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False}
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_FILES = 10_000
MAX_PATH_CHARS = 400


class UserFiles:
    """The default user's folder: settings (read-modify-write under a lock) and file operations."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    # ---- settings --------------------------------------------------------------------------------------------------

    def _stored(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def settings(self) -> dict[str, Any]:
        """The seeded defaults overlaid with what the user saved."""
        with self._lock:
            return {**SEEDED_SETTINGS, **self._stored()}

    def update(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into the saved settings (atomic write)."""
        with self._lock:
            merged = {**self._stored(), **values}
            data = json.dumps(merged, indent=2).encode()
            if len(data) > MAX_FILE_BYTES:
                raise HTTPError(413, "settings_too_large", f"the settings would exceed {MAX_FILE_BYTES} bytes")
            self._write(self.root / SETTINGS_FILE, data)

    # ---- files -----------------------------------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        """The absolute path of a user file; refuses escapes, empty and over-long names."""
        if not rel or len(rel) > MAX_PATH_CHARS:
            raise UnsafePathError(f"user file name {rel[:80]!r} is not allowed; use a relative path of at most "
                                  f"{MAX_PATH_CHARS} characters like workflows/name.json")
        path = safe_join(self.root, rel)
        if path == self.root.resolve():
            raise UnsafePathError("name a file inside the user folder, not the folder itself")
        return path

    def info(self, path: Path) -> dict[str, Any]:
        """``{path, size, modified}`` (modified in milliseconds, as the editor compares it with Date.now())."""
        stat = path.stat()
        return {"path": path.relative_to(self.root.resolve()).as_posix(), "size": stat.st_size,
                "modified": int(stat.st_mtime * 1000), "created": int(stat.st_ctime * 1000)}

    def listing(self, folder: str, recurse: bool, full: bool, split: bool) -> list[Any]:
        """Files under ``folder`` (paths relative to it); a folder not created yet is empty."""
        base = safe_join(self.root, folder)
        if not base.is_dir():
            return []
        root = self.root.resolve()
        files = sorted(p for p in (base.rglob("*") if recurse else base.iterdir())
                       if p.is_file() and root in p.resolve().parents)
        out: list[Any] = []
        for p in files[:MAX_FILES]:
            rel = p.relative_to(base).as_posix()
            if full:
                try:
                    entry = self.info(p)
                except FileNotFoundError:  # moved or deleted since the listing: leave it out
                    continue
                entry["path"] = rel
                out.append(entry)
            elif split:
                out.append([rel, *rel.split("/")])
            else:
                out.append(rel)
        return out

    def _check_folders(self, path: Path, rel: str) -> None:
        """409 when a file stands where ``rel`` needs a folder (``a.json/b.json`` while ``a.json`` is a file)."""
        root = self.root.resolve()
        for parent in path.parents:
            if parent == root or root not in parent.parents:
                break
            if parent.exists() and not parent.is_dir():
                raise HTTPError(409, "path_conflict", f"{rel!r} needs {parent.relative_to(root).as_posix()!r} to be a "
                                "folder, but it is a file", "choose another name or move that file first")

    def _count(self) -> int:
        return sum(1 for p in self.root.rglob("*") if p.is_file())

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".userdata-{uuid.uuid4().hex}.tmp"  # never longer than the name limit allows
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def store(self, rel: str, data: bytes, overwrite: bool) -> Path:
        """Write a user file; 409 when it exists and ``overwrite`` is false."""
        path = self.path(rel)
        self._check_folders(path, rel)
        with self._lock:
            if path.exists() and (not overwrite or path.is_dir()):
                raise HTTPError(409, "file_exists", f"{rel!r} already exists", "send ?overwrite=true to replace it")
            if not path.exists() and self.root.is_dir() and self._count() >= MAX_FILES:
                raise HTTPError(507, "too_many_files", f"the user folder holds {MAX_FILES} files (the cap)",
                                "delete some saved workflows first")
            self._write(path, data)
        return path

    def delete(self, rel: str) -> None:
        """Delete a user file; 404 when it does not exist."""
        path = self.path(rel)
        if not path.is_file():
            raise HTTPError(404, "not_found", f"no user file {rel!r}")
        try:
            path.unlink()
        except FileNotFoundError:  # deleted by a concurrent request between the check and here
            raise HTTPError(404, "not_found", f"no user file {rel!r}") from None

    def move(self, source: str, dest: str, overwrite: bool) -> Path:
        """Rename a user file; 404 for a missing source, 409 for an existing destination without overwrite."""
        src, dst = self.path(source), self.path(dest)
        self._check_folders(dst, dest)
        with self._lock:
            if not src.is_file():
                raise HTTPError(404, "not_found", f"no user file {source!r}")
            if dst.exists() and (not overwrite or dst.is_dir()):
                raise HTTPError(409, "file_exists", f"{dest!r} already exists", "send ?overwrite=true to replace it")
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        return dst


def user_files(st: ServerState) -> UserFiles:
    """The UserFiles service of this server's engine (created on first use)."""
    root = st.engine.config.user_dir / USER
    files = st.engine.services.get(UserFiles, lambda: UserFiles(root))
    if files.root != root:  # another home on a shared engine: do not reuse the other folder
        files = UserFiles(root)
        st.engine.services.put(UserFiles, files)
    return files


def _flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    return default if raw is None else raw.lower() in ("1", "true", "yes")


# ---- users and settings -------------------------------------------------------------------------------------------

@routes.get("/users")
async def users(request: web.Request) -> web.Response:
    """Single-user mode (no ``users`` key, so the editor shows no login)."""
    return json_response({"storage": "server", "migrated": True})


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    """All settings ``{id: value}``."""
    st = state(request)
    return json_response(await st.blocking(user_files(st).settings))


@routes.get("/settings/{id}")
async def get_setting(request: web.Request) -> web.Response:
    """One setting's value (``null`` when unset)."""
    st = state(request)
    values = await st.blocking(user_files(st).settings)
    return json_response(values.get(request.match_info["id"]))


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    """Merge ``{id: value}`` into the settings."""
    st = state(request)
    await st.blocking(user_files(st).update, await read_json(request))
    return web.Response(status=200)


@routes.post("/settings/{id}")
async def post_setting(request: web.Request) -> web.Response:
    """Set one setting to the JSON value in the body."""
    st = state(request)
    body = await read_body(request, st.settings.max_json_bytes)
    try:
        value = jsonsafe.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPError(400, "invalid_json", f"the setting value is not JSON: {exc}") from None
    await st.blocking(user_files(st).update, {request.match_info["id"]: value})
    return web.Response(status=200)


# ---- user files ---------------------------------------------------------------------------------------------------

@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    """``?dir=workflows&recurse=true&full_info=true&split=false`` → the files in that folder."""
    st = state(request)
    folder = request.query.get("dir")
    if folder is None:
        raise HTTPError(400, "invalid_parameter", "the 'dir' query parameter is required, e.g. ?dir=workflows")
    listing = await st.blocking(user_files(st).listing, folder, _flag(request, "recurse", False),
                                _flag(request, "full_info", False), _flag(request, "split", False))
    return json_response(listing)


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    """A user file's contents (the name is URL-encoded: ``workflows%2Fname.json``)."""
    path = user_files(state(request)).path(request.match_info["file"])
    if not path.is_file():
        raise HTTPError(404, "not_found", f"no user file {request.match_info['file']!r}")
    # user.css is linked by the editor's page; anything else unknown is sent as bytes (with nosniff: never run).
    ctype = {".json": "application/json", ".css": "text/css"}.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    """Save the body as a user file (``?overwrite=false`` → 409 when it exists; ``?full_info=true``)."""
    st = state(request)
    files = user_files(st)
    data = await read_body(request, MAX_FILE_BYTES)
    path = await st.blocking(files.store, request.match_info["file"], data, _flag(request, "overwrite", True))
    if _flag(request, "full_info", False):
        return json_response(await st.blocking(files.info, path))
    return json_response(request.match_info["file"])


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    """Delete a user file."""
    st = state(request)
    await st.blocking(user_files(st).delete, request.match_info["file"])
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    """Rename a user file (``?overwrite=true`` replaces the destination)."""
    st = state(request)
    files = user_files(st)
    path = await st.blocking(files.move, request.match_info["file"], request.match_info["dest"],
                             _flag(request, "overwrite", False))
    if _flag(request, "full_info", False):
        return json_response(await st.blocking(files.info, path))
    return json_response(request.match_info["dest"])
