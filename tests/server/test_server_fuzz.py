"""Property-based fuzzing of every route (from GET /openapi.json) against a real server on a loopback port.

Each operation gets ``NODEGRAPH_FUZZ_EXAMPLES`` generated requests (default 12; the whole run is held to about
``NODEGRAPH_FUZZ_BUDGET_S`` seconds, default 90) mixing schema-conforming and hostile values. No answer may be a 5xx
or non-standard JSON, the server must answer each request and ``GET /system_stats`` afterwards, and it must not write
outside its temporary home (audit hook + canary files). ``NODEGRAPH_FUZZ_NOISE=N`` adds N threads racing well-formed
requests on the same files and queue. ``NODEGRAPH_FUZZ_SEED`` replays a run; the failure message
prints the seed, each failing route with its smallest request, the answer and the exception the server logged.
Long runs: ``python bench/fuzz_server.py --examples 500 --shrink``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from fuzz_sandbox import (  # noqa: E402
    AUDIT_HOOK, OUTSIDE_MARK, Answer, Req, Sandbox, ServerProcess, strict_json,
)
from fuzz_noise import Noise  # noqa: E402
from fuzz_server import Report, fetch_json, finish, fuzz, noise_check, problem, queue_stalled  # noqa: E402
from fuzz_strategies import Operation, operations, request_strategy  # noqa: E402
from fuzz_values import Raw, dump_json  # noqa: E402
from fuzz_ws import ws_problem  # noqa: E402

EXAMPLES = int(os.environ.get("NODEGRAPH_FUZZ_EXAMPLES", "12"))
BUDGET_S = float(os.environ.get("NODEGRAPH_FUZZ_BUDGET_S", "90"))
NOISE = int(os.environ.get("NODEGRAPH_FUZZ_NOISE", "0"))


@pytest.mark.timeout(900)
def test_fuzz_every_route(tmp_path: Path) -> None:
    seed = int(os.environ.get("NODEGRAPH_FUZZ_SEED") or random.randrange(2**32))
    sandbox = Sandbox(tmp_path / "fuzz")
    server = ServerProcess(sandbox)
    try:
        document = fetch_json(server, "/openapi.json")
        catalogue = fetch_json(server, "/object_info")
        ops = operations(document)
        assert len(ops) > 80 and any(op.path == "/api/prompt" for op in ops)
        report = Report()
        with Noise(server, NOISE, noise_check(server, report, 30.0)):
            fuzz(server, ops, catalogue, EXAMPLES, report, seed=seed, budget_s=BUDGET_S)
        errors = finish(server, sandbox, report)
    finally:
        server.stop()
    fuzzed = {name: n for name, n in report.requests.items() if not name.startswith("NOISE ")}
    assert {op.name for op in ops} == set(fuzzed) or report.fatal, "every operation was fuzzed"
    assert min(fuzzed.values()) >= 3 or report.fatal
    failed = bool(report.findings or errors)
    assert not failed, f"NODEGRAPH_FUZZ_SEED={seed}\n{report.summary()}\n" + "\n".join(errors)


# ---- the checks themselves can fail -----------------------------------------------------------------------------

def test_problem_flags_5xx_and_non_standard_json() -> None:
    op = Operation("GET", "/queue", {})
    ok = Answer(200, {"content-type": "application/json"}, b'{"a": [1, 2.5, null]}')
    assert problem(op, ok) is None
    assert problem(op, Answer(500, {}, b"")) == "HTTP 500"
    assert problem(op, Answer(503, {"content-type": "text/html"}, b"x")) == "HTTP 503"
    for body in (b'{"a": NaN}', b"[Infinity]", b'{"a": "\\ud800"}', b"\xff", b"{"):
        assert problem(op, Answer(200, {"content-type": "application/json"}, body)), body
    # a stored file sent back as it is (user data) is not the server's JSON
    assert problem(Operation("GET", "/api/userdata/{file}", {}),
                   Answer(200, {"content-type": "application/json"}, b"NaN")) is None
    with pytest.raises(ValueError):
        strict_json(b"[-Infinity]")
    status = b'{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "a"}}'
    assert ws_problem(Answer(101, {}, status)) is None
    assert ws_problem(Answer(400, {}, b"")) is None
    assert ws_problem(Answer(500, {}, b""))
    assert ws_problem(Answer(101, {}, b'{"type": "status", "x": NaN}'))
    assert ws_problem(Answer(101, {}, b'{"type": "executing"}'))


def test_audit_hook_reports_writes_outside_the_allowed_folder(tmp_path: Path) -> None:
    inside, outside = tmp_path / "home", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("keep")
    script = AUDIT_HOOK + f"""
import os, sqlite3, shutil
inside, outside = {str(inside)!r}, {str(outside)!r}
open(os.path.join(inside, "ok.txt"), "w").write("fine")
open(os.path.join(outside, "victim.txt")).read()
open(os.path.join(inside, "../elsewhere/new.txt"), "w").write("escape")
os.rename(os.path.join(outside, "victim.txt"), os.path.join(inside, "moved.txt"))
os.mkdir(os.path.join(outside, "dir"))
shutil.rmtree(os.path.join(outside, "dir"))
sqlite3.connect(os.path.join(outside, "db.sqlite3")).close()
"""
    env = dict(os.environ, NODEGRAPH_FUZZ_ALLOWED=str(inside))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    reports = [line for line in out.stderr.splitlines() if line.startswith(OUTSIDE_MARK)]
    events = {line.split()[1] for line in reports}
    assert {"open", "os.rename", "os.mkdir", "shutil.rmtree", "sqlite3.connect"} <= events, reports
    assert not any("ok.txt" in line or "moved.txt" in line for line in reports), reports
    assert all("elsewhere" in line for line in reports), reports


def test_liveness_check_sees_a_busy_queue(tmp_path: Path) -> None:
    server = ServerProcess(Sandbox(tmp_path / "fuzz"))
    try:
        slow = {"1": {"class_type": "SlowSteps", "inputs": {"steps": 1000, "step_ms": 1000, "preview": False,
                                                            "tag": "", "save": False}}}
        answer = server_request(server, "POST", "/prompt", {"prompt": slow})
        assert answer.status == 200, answer.describe()
        assert "did not finish" in (queue_stalled(server, timeout=2) or "")
        assert server_request(server, "POST", "/interrupt", {}).status == 200
        assert queue_stalled(server, timeout=60) is None
    finally:
        server.stop()


def server_request(server: ServerProcess, method: str, path: str, body: object) -> Answer:
    """A JSON request to the fuzzed server."""
    from fuzz_sandbox import request

    return request(server.port, Req(method, path, headers={"Content-Type": "application/json"},
                                    body=json.dumps(body).encode()))


def test_sandbox_snapshot_sees_changes_beside_the_home(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "fuzz")
    (sandbox.home / "input" / "new.png").write_bytes(b"x")  # inside the home: not watched
    assert sandbox.outside() == sandbox.before
    (sandbox.root / "canary.txt").write_text("changed")
    (sandbox.root / "new.txt").write_text("new")
    changed = {k for k in set(sandbox.outside()) | set(sandbox.before)
               if sandbox.outside().get(k) != sandbox.before.get(k)}
    assert changed == {"canary.txt", "new.txt"}


def test_requests_stay_within_transport_limits_and_keep_hostile_bytes() -> None:
    from hypothesis import HealthCheck, given, settings

    op = Operation("POST", "/api/userdata/{file}/move/{dest}", {"parameters": [
        {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "dest", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "overwrite", "in": "query", "schema": {"type": "boolean"}}]})
    seen: list[Req] = []

    @settings(max_examples=150, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(request_strategy(op, {}))
    def check(req: Req) -> None:
        assert len(req.target()) < 8000 and req.target().startswith("/api/userdata/")
        seen.append(req)
    check()
    assert any(".." in r.path for r in seen) and any("%00" in r.target() for r in seen)
    assert dump_json({"a": Raw("NaN"), "s": "\ud800"}) == b'{"a": NaN, "s": "\\ud800"}'
