"""The one place that decides whether a user-supplied path may be used: every route, node and loader asks here.

A *user-supplied* path is anything that did not come from the operator's own configuration: a query parameter, an
upload's file name or subfolder, a user-data name, a workflow value, a plugin's answer, a field in a model file.
``safe_join(root, *parts)`` accepts only relative names that stay inside ``root`` after symlinks are resolved and
refuses, with ``UnsafePathError`` (a ``ValueError``):

- escapes: ``..`` components, absolute POSIX paths, Windows drive (``C:``) and UNC (``\\\\host\\share``) paths,
  backslash separators, and symlinks whose target lies outside ``root``;
- malformed names (``InvalidPathError``, a subclass): NUL and other control characters, text that is not valid
  Unicode, a component over ``MAX_COMPONENT_BYTES`` bytes, a whole path over ``MAX_PATH_BYTES``, more than
  ``MAX_DEPTH`` folders, and Windows device names (``CON``, ``NUL``, ``COM1``, … with any extension), refused on every
  platform so that folders stay portable.

Empty and ``.`` components are ignored (``a//b`` and ``./a`` name ``a/b`` and ``a``).
"""

from __future__ import annotations

import re
from pathlib import Path

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_DEPTH = 16
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                              *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10)),
                              "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A user-supplied path tried to leave its folder (HTTP 403)."""

    http_status = 403


class InvalidPathError(UnsafePathError):
    """A user-supplied path is malformed: control characters, too long, too deep or a reserved name (HTTP 400)."""

    http_status = 400


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_component(name: str, what: str = "file name") -> str:
    """Return ``name`` if it is one acceptable path component (no separators); raise ``UnsafePathError`` if not."""
    if not isinstance(name, str):
        raise InvalidPathError(f"{what} must be text, not {type(name).__name__}")
    if not name:
        raise InvalidPathError(f"{what} is empty; send a file name")
    if "\0" in name:
        raise InvalidPathError(f"{what} {_shown(name)} contains a NUL byte; send the name without it")
    if _CONTROL.search(name):
        raise InvalidPathError(f"{what} {_shown(name)} contains control characters; use printable characters only")
    if "/" in name or "\\" in name:
        raise UnsafePathError(f"{what} {_shown(name)} contains a path separator; send a plain name without folders")
    if name in ("..", "."):
        raise UnsafePathError(f"{what} {_shown(name)} is not allowed; '..' and '.' never name a file")
    if _DRIVE.match(name):
        raise UnsafePathError(f"{what} {_shown(name)} names a Windows drive; give a name relative to the folder")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPathError(f"{what} {_shown(name)} is not valid Unicode (a lone surrogate); send UTF-8 text") \
            from None
    if size > MAX_COMPONENT_BYTES:
        raise InvalidPathError(f"{what} {_shown(name)} is {size} bytes long; the limit is {MAX_COMPONENT_BYTES} "
                               "bytes per name, use a shorter one")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in WINDOWS_RESERVED:
        raise InvalidPathError(f"{what} {_shown(name)} is a reserved device name on Windows; rename it")
    return name


def relative_parts(*parts: str, what: str = "path") -> list[str]:
    """Split user-supplied relative path pieces (each may hold ``/``) into checked components."""
    out: list[str] = []
    total = 0
    for part in parts:
        if part is None or part == "":
            continue
        if not isinstance(part, str):
            raise InvalidPathError(f"{what} must be text, not {type(part).__name__}")
        if "\0" in part:
            raise InvalidPathError(f"{what} {_shown(part)} contains a NUL byte; send the name without it")
        if part.startswith(("/", "\\")) or _DRIVE.match(part):
            raise UnsafePathError(f"absolute {what} {_shown(part)} is not allowed; give a name relative to the "
                                  "folder")
        if "\\" in part:
            raise UnsafePathError(f"{what} {_shown(part)} uses '\\' (a Windows separator); use '/' between folders")
        for piece in part.split("/"):
            if piece in ("", "."):
                continue
            if piece == "..":
                raise UnsafePathError(f"{what} {_shown(part)} contains '..'; name a file inside the folder")
            out.append(check_component(piece, what))
            total += len(piece.encode("utf-8")) + 1
    if total > MAX_PATH_BYTES:
        raise InvalidPathError(f"{what} is {total} bytes long; the limit is {MAX_PATH_BYTES} bytes")
    if len(out) > MAX_DEPTH + 1:
        raise InvalidPathError(f"{what} is {len(out) - 1} folders deep; the limit is {MAX_DEPTH}")
    return out


def safe_join(root: Path, *parts: str) -> Path:
    """Join user-supplied ``parts`` under ``root`` and return the resolved path; refuse anything unsafe."""
    names = relative_parts(*parts)
    root = Path(root).resolve()
    try:
        resolved = root.joinpath(*names).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop, or a link chain the OS refuses to follow
        raise UnsafePathError(f"path {_shown('/'.join(names))} cannot be resolved ({exc}); remove the broken link") \
            from None
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"path {_shown('/'.join(names))} leads outside the {root.name}/ folder through a link; "
                              "remove the link or name a file inside the folder")
    return resolved


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` (after resolving links) is ``root`` or lies under it."""
    try:
        root, path = Path(root).resolve(), Path(path).resolve()
    except (RuntimeError, OSError):  # a symlink loop
        return False
    return path == root or root in path.parents


__all__ = ["MAX_COMPONENT_BYTES", "MAX_PATH_BYTES", "MAX_DEPTH", "UnsafePathError", "InvalidPathError",
           "check_component", "relative_parts", "safe_join", "is_inside"]
