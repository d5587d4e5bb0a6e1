"""The server under fuzzing: ``nodegraph serve`` in a subprocess with a temporary home, an audit hook (PEP 578)
that reports every write, delete, rename or database outside that home, canary files beside it, and raw HTTP
requests whose hostile bytes reach the server unchanged. Used by ``bench/fuzz_server.py`` and its test."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST_PLUGINS = REPO / "tests" / "server" / "plugins"
OUTSIDE_MARK = "NODEGRAPH-FUZZ-OUTSIDE:"


#: Python source installing an audit hook that prints OUTSIDE_MARK lines for writes outside $NODEGRAPH_FUZZ_ALLOWED.
AUDIT_HOOK = r'''
import os, sys, threading
ALLOWED = [os.path.realpath(p) for p in os.environ["NODEGRAPH_FUZZ_ALLOWED"].split(os.pathsep) if p]
SYSTEM = ("/dev/", "/proc/")
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_busy = threading.local()

def _full(path, dir_fd=None):
    if isinstance(path, int):
        return None
    path = os.fsdecode(os.fspath(path))
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    base = os.readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and dir_fd >= 0 else os.getcwd()
    return os.path.realpath(os.path.join(base, path))

def _check(event, path, dir_fd=None):
    full = _full(path, dir_fd)
    if full is None or full.startswith(SYSTEM) or any(full == r or full.startswith(r + os.sep) for r in ALLOWED):
        return
    sys.stderr.write(f"{MARK} {event} {full!r}\n")
    sys.stderr.flush()

def hook(event, args):
    if getattr(_busy, "on", False):
        return
    _busy.on = True
    try:
        if event == "open":
            path, mode, flags = args
            if (mode and any(c in mode for c in "wax+")) or (flags or 0) & WRITE:
                _check(event, path)
        elif event in ("os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.utime", "os.chown"):
            _check(event, args[0], args[-1] if event in ("os.remove", "os.rmdir") else None)
        elif event == "os.mkdir":
            _check(event, args[0], args[2])
        elif event == "os.rename":
            _check(event, args[0], args[2])
            _check(event, args[1], args[3])
        elif event in ("os.symlink", "os.link"):
            _check(event, args[1])
        elif event in ("shutil.rmtree", "sqlite3.connect"):
            _check(event, args[0])
        elif event == "shutil.copyfile":
            _check(event, args[1])
    except Exception as exc:
        sys.stderr.write(f"{MARK} audit-hook-error {event} {args!r} {exc!r}\n")
    finally:
        _busy.on = False

sys.addaudithook(hook)
'''.replace("MARK", repr(OUTSIDE_MARK))
#: ``python -c BOOT serve ...``: the nodegraph command under the audit hook.
BOOT = AUDIT_HOOK + "from nodegraph.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_png(size: int = 4) -> bytes:
    """A small RGBA PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (size, size), (10, 200, 30, 128)).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    """``relative path → size:mtime:sha1`` of every file under ``root`` outside ``skip``."""
    out = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip) or not path.is_file():
            continue
        data = path.read_bytes()
        out[path.relative_to(root).as_posix()] = f"{len(data)}:{path.stat().st_mtime_ns}:" \
                                                 f"{hashlib.sha1(data).hexdigest()}"
    return out


class Sandbox:
    """A temporary root holding the server's home, its working folder and canary files beside the home."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.cwd = root / "cwd"
        self.log = root / "server.log"
        for folder in (self.home / "input", self.home / "output", self.home / "user" / "default", self.cwd):
            folder.mkdir(parents=True, exist_ok=True)
        png = tiny_png()
        for name in ("fuzz.png", "sub/fuzz.png"):
            for kind in ("input", "output"):
                (self.home / kind / name).parent.mkdir(parents=True, exist_ok=True)
                (self.home / kind / name).write_bytes(png)
        (self.home / "user" / "default" / "workflows").mkdir(exist_ok=True)
        (self.home / "user" / "default" / "workflows" / "a.json").write_text('{"nodes": []}')
        # Canaries where a '..' too many would land: beside the home, and beside the user folder's parent.
        for rel in ("canary.txt", "user/canary.json", "outside/canary.png", "cwd/canary.txt"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(f"canary {rel}")
        self.before = self.outside()

    def outside(self) -> dict[str, str]:
        """Snapshot of everything in the sandbox that is not the home or the server log."""
        return snapshot(self.root, (self.home, self.log))


class ServerProcess:
    """``nodegraph serve`` in a subprocess on a free port, its home in ``sandbox``, writes outside it reported."""

    def __init__(self, sandbox: Sandbox, plugin_dirs: tuple[Path, ...] = (TEST_PLUGINS,)) -> None:
        self.sandbox = sandbox
        self.port = free_port()
        # No bytecode caches: importing a module never compiled before would write __pycache__ beside it.
        env = dict(os.environ, NODEGRAPH_FUZZ_ALLOWED=str(sandbox.home), HF_HUB_OFFLINE="1", NODEGRAPH_WARMUP="0",
                   PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        args = [sys.executable, "-c", BOOT, "serve", "--home", str(sandbox.home), "--port", str(self.port)]
        for folder in plugin_dirs:
            args += ["--plugin-dir", str(folder)]
        self._log = open(sandbox.log, "wb")
        self.proc = subprocess.Popen(args, cwd=sandbox.cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until ``GET /system_stats`` answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if request(self.port, Req("GET", "/system_stats"), timeout=5).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        return self.sandbox.log.read_text(errors="replace")

    def log_size(self) -> int:
        """Bytes the server has logged so far (an offset for ``error_since``)."""
        self._log.flush()
        return self.sandbox.log.stat().st_size

    def error_since(self, offset: int) -> str:
        """The last exception line the server logged after ``offset`` (its traceback's last line), or ''."""
        self._log.flush()
        with open(self.sandbox.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        found = ""
        for line in text.splitlines():
            if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line):
                found = line
        return found[:240]

    def outside_writes(self) -> list[str]:
        """The audit hook's reports of writes outside the home."""
        return [line for line in self.log_text().splitlines() if line.startswith(OUTSIDE_MARK)]

    def stop(self) -> None:
        """Terminate the server (kill after 10 s)."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# ---- requests and answers ------------------------------------------------------------------------------------------

_RUN = re.compile(r"(.{1,16}?)\1{7,}", re.S)


def compact(text: str, limit: int = 600) -> str:
    """``text`` with runs of a repeated unit written as ``(unit)×count``, cut at ``limit`` characters."""
    text = _RUN.sub(lambda m: f"({m.group(1)})×{len(m.group(0)) // len(m.group(1))}", text)
    return text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit} chars)"


@dataclass
class Req:
    """One HTTP request, kept as bytes so that hostile values reach the server unchanged."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    #: WebSocket frames ``(kind, data)`` to send after the handshake (None: a plain HTTP request).
    frames: list[tuple[str, Any]] | None = None

    def target(self) -> str:
        """The request target (path and query)."""
        return self.path + ("?" + self.query if self.query else "")

    def size(self) -> int:
        """A measure of the request's size (to keep the smallest example of a failure)."""
        return len(self.target()) + len(self.body or b"") + sum(len(k) + len(v) for k, v in self.headers.items()) \
            + sum(len(data) for _kind, data in self.frames or [])

    def describe(self, limit: int = 600) -> str:
        """A one-line rendering for reports (runs of a repeated unit written as ``unit×count``)."""
        body = "" if self.body is None else f" body={compact(repr(self.body), limit)} ({len(self.body)} bytes)"
        ctype = self.headers.get("Content-Type")
        frames = "" if self.frames is None else f" websocket frames={compact(repr(self.frames), limit)}"
        return f"{self.method} {compact(self.target(), limit)}" + (f" [{ctype}]" if ctype else "") + body + frames


@dataclass
class Answer:
    """Status, headers and body of an answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def describe(self, limit: int = 300) -> str:
        """A one-line rendering for reports."""
        return f"{self.status} {self.headers.get('content-type', '')} {compact(repr(self.body), limit)}"


def request(port: int, req: Req, timeout: float = 30.0) -> Answer:
    """Send one request on a fresh connection; raises OSError (incl. timeouts) when no answer comes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(req.method, req.target(), skip_accept_encoding=True)
        headers = dict(req.headers)
        if req.body is not None:
            headers["Content-Length"] = str(len(req.body))
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders(req.body)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    except http.client.HTTPException as exc:
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def strict_json(body: bytes) -> Any:
    """Parse as RFC 8259 JSON: UTF-8, no NaN/Infinity, no lone surrogates; raises ValueError otherwise."""
    value = json.loads(body.decode("utf-8"), parse_constant=_refuse)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError (a ValueError)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value
