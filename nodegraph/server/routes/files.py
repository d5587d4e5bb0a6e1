"""File routes: view input/output/temp files and upload images and masks; nothing ever leaves its folder.

Every name, subfolder and reference is decided by ``nodegraph.paths`` (escapes answer 403, malformed names such as
NUL bytes, over-long or too-deep paths 4xx). Uploads are capped while they are read, whether or not the client sent a
Content-Length: the whole body at ``max_upload_bytes + FIELD_LIMIT``, each text field at ``FIELD_LIMIT`` and the
number of parts at ``MAX_FIELDS`` (413 with a message naming the limit).
"""

from __future__ import annotations

import io
import mimetypes
import os
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ... import jsonsafe
from ...media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, verify_upload
from ...paths import UnsafePathError, check_component, safe_join
from ..http import HTTPError, json_response
from ..state import ServerState, state

routes = web.RouteTableDef()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
#: Types served inline; anything else is sent as an attachment so a browser never renders it as a page.
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff", "video/mp4",
                "video/webm", "video/x-matroska", "video/quicktime", "audio/mp4", "audio/wav", "audio/x-wav",
                "audio/mpeg", "audio/flac", "audio/ogg", "text/plain", "application/json", "image/svg+xml")
#: SVG can carry scripts: it is shown inline only under this policy (no scripts, no fetches; inline styles and data:
#: images only), so the editor can show SaveSVGNode's output without it running anything.
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
#: Video and audio types by extension, whatever the system's MIME table says (the editor's <video> needs them).
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".wav": "audio/wav",
               ".ogg": "audio/ogg", ".opus": "audio/ogg", ".m4a": "audio/mp4", ".svg": "image/svg+xml"}
FIELD_LIMIT = 64 * 1024
#: Parts accepted in one upload (image, type, subfolder, overwrite, original_ref and a few the editor may add).
MAX_FIELDS = 32
UPLOAD_FIX = "send a smaller file or start the server with a larger --max-upload-mb"


def _root(st: ServerState, kind: Any, default: str) -> Path:
    if kind is not None and not isinstance(kind, str):
        raise HTTPError(400, "invalid_type", f"folder type must be text (input, output or temp), not {type(kind).__name__}")
    try:
        return st.engine.config.folder_for(kind or default)
    except UnsafePathError as exc:
        raise HTTPError(400, "invalid_type", str(exc)) from None


def _check_name(name: str) -> str:
    return check_component(name, "file name")


def _file_headers(path: Path) -> dict[str, str]:
    ctype = MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    disposition = "inline" if ctype in INLINE_TYPES else "attachment"
    if disposition == "attachment":
        ctype = "application/octet-stream"
    headers = {"Content-Type": ctype, "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(path.name)}",
               "Cache-Control": "no-cache"}
    if ctype == "image/svg+xml":
        headers["Content-Security-Policy"] = SVG_POLICY
    return headers


def _transform(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str] | None:
    """Re-encode an image for ``preview=webp;90`` / ``channel=rgb|a``; None when nothing changes."""
    from PIL import Image

    channel = (channel or "rgba").lower()
    if not preview and channel == "rgba":
        return None
    with Image.open(path) as img:
        if channel == "rgb":
            img = img.convert("RGB")
        elif channel == "a":
            alpha = img.convert("RGBA").getchannel("A")
            img = Image.merge("RGBA", (Image.new("L", alpha.size, 0),) * 3 + (alpha,))
        fmt, _, quality = (preview or "png").partition(";")
        fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
        if fmt not in ("png", "webp", "jpeg"):
            raise HTTPError(400, "invalid_parameter", f"preview format {fmt!r}: use webp, jpeg or png")
        if fmt == "jpeg" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=fmt.upper(), quality=int(quality) if quality.isdigit() else 90)
    return buf.getvalue(), f"image/{fmt}"


@routes.get("/view")
async def view(request: web.Request) -> web.StreamResponse:
    """``?filename&subfolder&type`` → the file (``preview=webp;90`` and ``channel=rgb|a`` re-encode images)."""
    st = state(request)
    q = request.query
    filename = q.get("filename", "")
    if not filename:
        raise HTTPError(400, "invalid_parameter", "the 'filename' query parameter is required")
    path = safe_join(_root(st, q.get("type"), "output"), *[p for p in (q.get("subfolder"), filename) if p])
    if not path.is_file():
        raise HTTPError(404, "not_found", f"no file {filename!r} in that folder")
    if path.suffix.lower() in IMAGE_SUFFIXES and (q.get("preview") or q.get("channel")):
        try:
            converted = await st.blocking(_transform, path, q.get("preview"), q.get("channel"))
        except (OSError, ValueError) as exc:
            raise HTTPError(400, "invalid_image", f"cannot convert {filename!r}: {exc}") from None
        if converted is not None:
            return web.Response(body=converted[0], content_type=converted[1])
    return web.FileResponse(path, headers=_file_headers(path))  # answers Range requests (206) and sends Accept-Ranges


def verify_image(data: bytes) -> str:
    """The image format of ``data``; raises ValueError when it is not a whole, reasonably sized image."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                img.verify()
        except Exception as exc:  # noqa: BLE001 - any failure to decode a hostile upload is "not an image"
            raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from None
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt or 'unknown'} is not accepted; send PNG, JPEG, WebP, BMP, GIF or TIFF")
    return fmt


class _Budget:
    """Bytes left for the whole multipart body (counted as received, so chunked bodies are capped too)."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request, self.limit = request, limit

    def check(self) -> None:
        """413 once the body read so far is over the limit."""
        if self.request.content.total_bytes > self.limit:
            raise HTTPError(413, "upload_too_large", f"the upload exceeds the limit of {self.limit} bytes", UPLOAD_FIX)


async def _read_part(part: BodyPartReader, limit: int, what: str, budget: _Budget) -> bytes:
    buf = bytearray()
    while chunk := await part.read_chunk(1 << 16):
        buf += chunk
        budget.check()
        if len(buf) > limit:
            raise HTTPError(413, "upload_too_large", f"{what} exceeds the limit of {limit} bytes", UPLOAD_FIX)
    return bytes(buf)


async def _read_upload(request: web.Request) -> tuple[str, bytes, dict[str, str]]:
    limit = state(request).settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + FIELD_LIMIT:
        raise HTTPError(413, "upload_too_large", f"the upload is {request.content_length} bytes; the limit is "
                        f"{limit} bytes", UPLOAD_FIX)
    if not request.content_type.startswith("multipart/"):
        raise HTTPError(400, "invalid_upload", "send multipart/form-data with an 'image' file field")
    budget = _Budget(request, limit + FIELD_LIMIT)
    fields: dict[str, str] = {}
    name, data, count = "", None, 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            budget.check()
            count += 1
            if count > MAX_FIELDS:
                raise HTTPError(413, "too_many_fields", f"the multipart body has more than {MAX_FIELDS} fields (the "
                                "limit)", "send only image, type, subfolder, overwrite and original_ref")
            if not isinstance(part, BodyPartReader):
                raise HTTPError(400, "invalid_upload", "nested multipart bodies are not accepted")
            if part.name == "image":
                name, data = part.filename or "", await _read_part(part, limit, "the image", budget)
            else:
                text = await _read_part(part, FIELD_LIMIT, f"field {str(part.name)[:40]!r}", budget)
                if part.name:
                    fields[part.name] = text.decode("utf-8", "replace")
    except (ValueError, AssertionError, HttpProcessingError) as exc:  # no boundary, broken part headers or framing
        raise HTTPError(400, "invalid_upload", f"the multipart body cannot be read: {exc}",
                        "send multipart/form-data with a boundary parameter and an 'image' file field") from None
    if data is None:
        raise HTTPError(400, "invalid_upload", "the multipart body has no 'image' file field")
    return name, data, fields


def _target(folder: Path, name: str, data: bytes, overwrite: bool) -> Path:
    path = safe_join(folder, name)
    if overwrite or not path.exists():
        return path
    if path.is_file() and path.read_bytes() == data:
        return path  # the same file again: reuse it
    stem, suffix = os.path.splitext(name)
    i = 1
    while (candidate := safe_join(folder, f"{stem} ({i}){suffix}")).exists():
        i += 1
    return candidate


def _write(folder: Path, path: Path, data: bytes) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise HTTPError(409, "path_conflict", f"the subfolder {folder.name!r} cannot be created: a file stands where a "
                        "folder is needed", "choose another subfolder") from None
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_upload(st: ServerState, name: str, data: bytes, fields: dict[str, str],
                 original: dict[str, Any] | None) -> dict[str, str]:
    """Verify, place and write an upload (off the event loop); returns ComfyUI's ``{name, subfolder, type}``."""
    kind = fields.get("type") or "input"
    root = _root(st, kind, "input")
    subfolder = fields.get("subfolder", "")
    folder = safe_join(root, subfolder)
    _check_name(name)
    suffix = os.path.splitext(name)[1].lower()
    mask = original is not None
    if suffix not in IMAGE_SUFFIXES + (() if mask else VIDEO_SUFFIXES + AUDIO_SUFFIXES):
        raise HTTPError(400, "invalid_upload", f"{name!r} does not have an image extension ({', '.join(IMAGE_SUFFIXES)})"
                        + ("" if mask else f", a video one ({', '.join(VIDEO_SUFFIXES)}) or an audio one "
                           f"({', '.join(AUDIO_SUFFIXES)})"))
    if suffix not in IMAGE_SUFFIXES:  # ComfyUI's video and audio widgets upload here too
        try:
            verify_upload(data, name)
        except ValueError as exc:
            raise HTTPError(400, "invalid_media", str(exc), "upload a whole video or audio file") from None
    try:
        if suffix in IMAGE_SUFFIXES:
            verify_image(data)
        if original is not None:
            data = _apply_mask(st, original, data)
    except UnsafePathError:
        raise
    except ValueError as exc:
        raise HTTPError(400, "invalid_image", f"{name!r}: {exc}") from None
    overwrite = fields.get("overwrite", "").lower() in ("true", "1", "yes")
    path = _target(folder, name, data, overwrite)
    if not path.exists() or path.read_bytes() != data:
        _write(folder, path, data)
    return {"name": path.name, "subfolder": subfolder, "type": kind}


def _apply_mask(st: ServerState, ref: dict[str, Any], mask_data: bytes) -> bytes:
    """The referenced image with the mask's alpha as its alpha channel, as PNG."""
    from PIL import Image, PngImagePlugin

    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise HTTPError(400, "invalid_upload", "'original_ref' must be JSON {filename, subfolder, type}")
    src = safe_join(_root(st, ref.get("type"), "output"), str(ref.get("subfolder") or ""),
                    _check_name(ref["filename"]))
    if not src.is_file():
        raise HTTPError(404, "not_found", f"original image {ref['filename']!r} not found")
    with Image.open(src) as original, Image.open(io.BytesIO(mask_data)) as mask:
        info = PngImagePlugin.PngInfo()
        for key, value in original.info.items():
            if isinstance(key, str) and isinstance(value, str):
                info.add_text(key, value)
        out = original.convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A").resize(out.size, Image.Resampling.LANCZOS)
        out.putalpha(alpha)
        buf = io.BytesIO()
        out.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


@routes.post("/upload/image")
async def upload_image(request: web.Request) -> web.Response:
    """Multipart ``image`` (+ ``type``, ``subfolder``, ``overwrite``) → ``{name, subfolder, type}``."""
    st = state(request)
    name, data, fields = await _read_upload(request)
    return json_response(await st.blocking(_save_upload, st, name, data, fields, None))


@routes.post("/upload/mask")
async def upload_mask(request: web.Request) -> web.Response:
    """Like /upload/image, with ``original_ref`` JSON: saves the original image with the mask as its alpha."""
    st = state(request)
    name, data, fields = await _read_upload(request)
    try:
        ref = jsonsafe.loads(fields.get("original_ref", ""))
    except ValueError:
        raise HTTPError(400, "invalid_upload", "'original_ref' must be JSON {filename, subfolder, type}") from None
    return json_response(await st.blocking(_save_upload, st, name, data, fields, ref))


@routes.get("/extensions/{plugin}/{path:.+}")
async def extension_file(request: web.Request) -> web.StreamResponse:
    """A file from a plugin's web directory (``nodegraph_web_directory``)."""
    from .catalogue import web_directories

    folder = web_directories(state(request)).get(request.match_info["plugin"])
    if folder is None:
        raise HTTPError(404, "not_found", "no such extension")
    path = safe_join(folder, *request.match_info["path"].split("/"))
    if not path.is_file():
        raise HTTPError(404, "not_found", "no such file")
    headers = {"Content-Type": "text/javascript"} if path.suffix == ".js" else _file_headers(path)
    return web.FileResponse(path, headers=headers)
