"""Durability: kill -9 the server process mid-queue, restart it, and everything completes with history intact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from server_helpers import slow

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def wait_for(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    """The child process ids of ``pid`` (Linux)."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Any]:
    """Start server processes; every one still alive at the end is killed."""
    procs: list[subprocess.Popen] = []

    def start(port: int, home: Path, entry: list[str]) -> subprocess.Popen:
        log = open(tmp_path / f"server-{len(procs)}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NODEGRAPH_TOKEN": "", "NODEGRAPH_WARMUP": "0"}
        proc = subprocess.Popen([sys.executable, *entry, "--home", str(home), "--port", str(port),
                                 "--plugin-dir", str(PLUGINS)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=env)
        log.close()
        procs.append(proc)
        wait_for(lambda: proc.poll() is None and call(port, "GET", "/prompt"), 60, "the server to answer")
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_kill_mid_queue_restart_completes_everything(servers, tmp_path):
    port, home = free_port(), tmp_path / "home"
    first = servers(port, home, ["-m", "nodegraph.cli", "serve"])
    done = call(port, "POST", "/prompt", {"prompt": slow(steps=1, step_ms=0, tag="before", save=True)})["prompt_id"]
    wait_for(lambda: call(port, "GET", f"/history/{done}"), 20, "the first prompt")
    ids = [call(port, "POST", "/prompt", {"prompt": slow(steps=8, step_ms=40, tag=f"q{i}", save=True),
                                          "client_id": "durable"})["prompt_id"] for i in range(4)]
    running = wait_for(lambda: call(port, "GET", "/queue")["queue_running"], 20, "a running prompt")
    assert running[0][1] == ids[0]
    workers = children(first.pid)  # the worker process running the prompt (and multiprocessing's helper)
    assert workers
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the orphaned worker processes to end")
    assert not (home / "output" / "q0.txt").exists()

    second = servers(port, home, ["server.py"])  # the top-level script is the same entry point
    wait_for(lambda: call(port, "GET", "/prompt")["exec_info"]["queue_remaining"] == 0, 30, "the queue to drain")
    history = call(port, "GET", "/history")
    assert list(history) == [done, *ids]  # the interrupted prompt ran again first, then the rest in order
    for pid, tag in zip([done, *ids], ["before", "q0", "q1", "q2", "q3"]):
        entry = history[pid]
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert entry["outputs"]["1"]["text"] == [f"{tag}:{entry['prompt'][2]['1']['inputs']['steps']}"]
        assert (home / "output" / f"{tag}.txt").is_file()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/view?filename=before.txt&type=output") as resp:
        assert resp.read() == b"before:1"

    second.send_signal(signal.SIGTERM)  # a graceful stop exits cleanly
    assert second.wait(20) == 0
