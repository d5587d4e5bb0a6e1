"""Property-based fuzzing of every HTTP route of ``nodegraph serve``, driven by its own OpenAPI document.

    python bench/fuzz_server.py [--examples 200] [--seed N] [--only /view] [--shrink] [--noise THREADS]

Starts a real server (``nodegraph serve``) on a free loopback port with a temporary home, reads
``GET /openapi.json`` and, for every operation in it (every route at ``/`` and ``/api``), lets Hypothesis generate
requests from the operation's schemas mixed with hostile values (see ``fuzz_strategies``). Every answer must be
below 500 and, when it says JSON, standard JSON (strict parse: no NaN/Infinity, UTF-8, no lone surrogates); the
server must answer each request within ``--timeout`` s, still answer ``GET /system_stats`` at the end, and never
write outside its home: an audit hook in the server process reports every write, delete, rename or database outside
it, and canary files beside the home must stay untouched (see ``fuzz_sandbox``).

Prints, per route, the count of requests and failures, then each distinct failure (route, request, answer, the
exception the server logged) with the smallest request that showed it (``--shrink``: minimised by Hypothesis).
``--noise`` adds threads sending well-formed requests on the same files and queue (``fuzz_noise``), to find races.
Exit status 1 on any failure. ``tests/server/test_server_fuzz.py`` runs the same with a few examples per route.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_sandbox import (
    OUTSIDE_MARK,
    Answer,
    Req,
    Sandbox,
    ServerProcess,
    request,
    strict_json,
)
from fuzz_noise import Noise
from fuzz_strategies import Operation, operations, request_strategy
from fuzz_ws import ws_exchange, ws_problem

#: Operations that send back stored files as they are: their bodies are not the server's JSON.
FILE_ROUTES = frozenset({("GET", "/userdata/{file}"), ("GET", "/view"), ("GET", "/{filename}"),
                         ("GET", "/extensions/{plugin}/{path}"), ("GET", "/extensions/core/{path}"),
                         ("GET", "/extensions/nodegraph-core/{name}")})


def problem(op: Operation, answer: Answer) -> str | None:
    """Why an answer is a failure (None when it is fine)."""
    if answer.status >= 500:
        return f"HTTP {answer.status}"
    if "json" in answer.headers.get("content-type", "") and (op.method, op.key) not in FILE_ROUTES and answer.body:
        try:
            strict_json(answer.body)
        except ValueError as exc:
            return f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})"
    return None


class ServerGone(Exception):
    """The server stopped answering or exited: nothing after this request can be trusted."""


class FuzzFailure(AssertionError):
    """An answer broke a rule (base class; one subclass per kind, so Hypothesis keeps them apart)."""

    req: Req
    answer: Answer | None
    cause: str


_FAILURE_TYPES: dict[str, type] = {}


def failure_type(kind: str) -> type:
    """A FuzzFailure subclass per failure kind (Hypothesis shrinks distinct exception types separately)."""
    if kind not in _FAILURE_TYPES:
        _FAILURE_TYPES[kind] = type(f"FuzzFailure_{len(_FAILURE_TYPES)}", (FuzzFailure,), {})
    return _FAILURE_TYPES[kind]


@dataclass
class Finding:
    """The smallest request seen for one (operation, failure kind), and how often the kind occurred."""

    op: str
    kind: str
    req: Req
    answer: Answer | None
    cause: str = ""
    count: int = 1
    shrunk: bool = False


@dataclass
class Report:
    """Per-operation request and failure counts, and the distinct findings."""

    requests: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    fatal: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, op: Operation, req: Req, answer: Answer | None, kind: str | None, cause: str = "") -> None:
        """Count one request and keep the smallest example of its failure kind (and the server's exception)."""
        with self.lock:
            self._record(op, req, answer, kind, cause)

    def _record(self, op: Operation, req: Req, answer: Answer | None, kind: str | None, cause: str) -> None:
        self.requests[op.name] = self.requests.get(op.name, 0) + 1
        self.statuses.setdefault(op.name, Counter())[answer.status if answer else 0] += 1
        if kind is None:
            return
        self.failures[op.name] = self.failures.get(op.name, 0) + 1
        found = self.findings.get((op.name, kind))
        if found is None:
            self.findings[(op.name, kind)] = Finding(op.name, kind, req, answer, cause)
        else:
            found.count += 1
            if req.size() < found.req.size() and not found.shrunk:
                found.req, found.answer, found.cause = req, answer, cause

    def summary(self) -> str:
        """The per-route table, totals and every finding."""
        lines = [f"{'route':52} {'requests':>8} {'failures':>8}  answers (status:count)"]
        for name in sorted(self.requests):
            answers = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.get(name, Counter()).items()))
            lines.append(f"{name:52} {self.requests[name]:8d} {self.failures.get(name, 0):8d}  {answers}")
        for label, noise in (("TOTAL fuzzed", False), ("TOTAL noise", True)):
            names = [n for n in self.requests if n.startswith("NOISE ") == noise]
            if names:
                lines.append(f"{label:52} {sum(self.requests[n] for n in names):8d} "
                             f"{sum(self.failures.get(n, 0) for n in names):8d}")
        lines.append(f"{'TOTAL':52} {sum(self.requests.values()):8d} {sum(self.failures.values()):8d}")
        for f in sorted(self.findings.values(), key=lambda f: (f.op, f.kind)):
            lines.append(f"FAIL {f.op}: {f.kind} (x{f.count}{', shrunk' if f.shrunk else ''})\n"
                         f"    request: {f.req.describe()}\n"
                         f"    answer:  {f.answer.describe() if f.answer else '(none)'}"
                         + (f"\n    server:  {f.cause}" if f.cause else ""))
        if self.fatal:
            lines.append(f"FATAL: {self.fatal}")
        return "\n".join(lines)


def kind_of(op: Operation, server: ServerProcess, req: Req,
            timeout: float) -> tuple[Answer | None, str | None, str]:
    """Send a request: the answer, its failure kind (None when fine; with the type of the exception the server
    logged) and that exception's line. Raises ServerGone when the server stopped answering or exited."""
    offset = server.log_size()
    kind: str | None
    answer: Answer | None
    try:
        answer = request(server.port, req, timeout) if req.frames is None else ws_exchange(server.port, req, timeout)
    except TimeoutError:
        raise ServerGone(f"no answer within {timeout} s to {req.describe()}") from None
    except OSError as exc:
        if not server.alive():
            raise ServerGone(f"the server exited ({server.proc.returncode}) on {req.describe()}") from None
        answer, kind = None, f"connection error ({type(exc).__name__})"
    else:
        kind = problem(op, answer) if req.frames is None else ws_problem(answer)
    if kind is None:
        return answer, None, ""
    cause = server.error_since(offset)
    return answer, (f"{kind}: {cause.split(':')[0]}" if cause else kind), cause


def fuzz(server: ServerProcess, ops: list[Operation], catalogue: dict[str, Any], examples: int, report: Report,
         timeout: float = 30.0, shrink: bool = False, seed: int | None = None,
         budget_s: float | None = None, progress: Callable[[str], None] | None = None) -> Report:
    """Generate ``examples`` requests per operation; with ``shrink``, minimise each failure kind found."""
    started = time.monotonic()
    for index, op in enumerate(ops):
        if report.fatal:
            break
        left = len(ops) - index
        n = examples
        if budget_s is not None:  # spread what is left of the budget over the remaining operations
            per_op = max(budget_s - (time.monotonic() - started), 0) / left
            rate = (time.monotonic() - started) / max(sum(report.requests.values()), 1)
            n = max(3, min(examples, int(per_op / max(rate, 1e-3))))
        strategy = request_strategy(op, catalogue)
        _run(server, op, strategy, n, report, timeout, raise_failures=False, seed=seed)
        if shrink and not report.fatal:
            for (name, kind), found in list(report.findings.items()):
                if name == op.name and not found.shrunk:
                    _run(server, op, strategy, max(3 * n, 100), report, timeout, raise_failures=True, seed=seed,
                         only_kind=kind)
        if progress:
            progress(f"{op.name}: {report.requests.get(op.name, 0)} requests, {report.failures.get(op.name, 0)} "
                     "failures")
    return report


def _run(server: ServerProcess, op: Operation, strategy: st.SearchStrategy[Req], examples: int, report: Report,
         timeout: float, raise_failures: bool, seed: int | None, only_kind: str | None = None) -> None:
    phases = [Phase.generate, Phase.shrink] if raise_failures else [Phase.generate]

    @settings(max_examples=examples, deadline=None, database=None, phases=phases, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False,
              verbosity=Verbosity.quiet)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        if report.fatal:
            return
        req = data.draw(strategy)
        try:
            answer, kind, cause = kind_of(op, server, req, timeout)
        except ServerGone as exc:
            report.fatal = str(exc)
            report.record(op, req, None, "server gone")
            return
        if not raise_failures:
            report.record(op, req, answer, kind, cause)
        elif kind is not None and (only_kind is None or kind == only_kind):
            exc = failure_type(kind)(kind)
            exc.req, exc.answer, exc.cause = req, answer, cause
            raise exc

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    try:
        one()
    except FuzzFailure as exc:  # the minimal example of only_kind, replayed last by Hypothesis
        found = report.findings.get((op.name, str(exc)))
        if found is not None:
            found.req, found.answer, found.cause, found.shrunk = exc.req, exc.answer, exc.cause, True


def fetch_json(server: ServerProcess, path: str) -> Any:
    """GET a JSON document from the server (strictly parsed)."""
    answer = request(server.port, Req("GET", path))
    if answer.status != 200:
        raise RuntimeError(f"GET {path} answered {answer.status}: {answer.body[:300]!r}")
    return strict_json(answer.body)


def noise_check(server: ServerProcess, report: Report, timeout: float) -> Callable[[str, Req], None]:
    """The check the noise threads run on each of their requests (recorded as operation ``NOISE METHOD path``)."""
    def check(name: str, req: Req) -> None:
        op = Operation(f"NOISE {req.method}", req.path, {})
        try:
            answer, kind, cause = kind_of(op, server, req, timeout)
        except ServerGone as exc:
            report.fatal = str(exc)
            return
        report.record(op, req, answer, kind, cause)
    return check


def queue_stalled(server: ServerProcess, timeout: float = 90.0) -> str | None:
    """Why a small prompt submitted now does not finish within ``timeout`` s (None when it does)."""
    prompt_id = f"fuzz-liveness-{time.monotonic_ns()}"
    graph = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
             "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}
    answer = request(server.port, Req("POST", "/prompt", headers={"Content-Type": "application/json"},
                                      body=json.dumps({"prompt": graph, "prompt_id": prompt_id}).encode()))
    if answer.status != 200:
        return f"after fuzzing, a small prompt was refused: {answer.describe()}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prompt_id in fetch_json(server, f"/history/{prompt_id}"):
            return None
        time.sleep(0.25)
    return f"queue stalled: a small prompt submitted after fuzzing did not finish within {timeout:.0f} s"


def finish(server: ServerProcess, sandbox: Sandbox, report: Report) -> list[str]:
    """The rules checked after fuzzing: server alive and answering in standard JSON, the queue still runs prompts,
    no write outside the home, canaries intact."""
    errors = []
    if report.fatal:
        errors.append(f"fatal: {report.fatal}")
    try:
        for path in ("/interrupt", "/queue"):  # stop what the fuzzer queued, then check the server answers
            request(server.port, Req("POST", path, headers={"Content-Type": "application/json"},
                                     body=b'{"clear": true}'), timeout=30)
        for path in ("/system_stats", "/history", "/queue", "/jobs", "/api/jobs?status=failed"):
            fetch_json(server, path)  # answers, in standard JSON, with whatever the fuzzer left
        stalled = queue_stalled(server)
        if stalled:
            errors.append(stalled)
    except (OSError, ValueError, RuntimeError) as exc:
        errors.append(f"after fuzzing: {exc}")
    if not server.alive():
        errors.append(f"the server exited with {server.proc.returncode}")
    errors += [f"write outside the home: {line[len(OUTSIDE_MARK):].strip()}" for line in server.outside_writes()]
    after = sandbox.outside()
    for rel in sorted(set(after) | set(sandbox.before)):
        if after.get(rel) != sandbox.before.get(rel):
            state = "created" if rel not in sandbox.before else "deleted" if rel not in after else "changed"
            errors.append(f"file outside the home {state}: {rel}")
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer against a fresh server and print the per-route counts and the failures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="generated requests per operation")
    parser.add_argument("--seed", type=int, default=None, help="Hypothesis seed (default: random)")
    parser.add_argument("--only", default=None, help="fuzz only operations whose 'METHOD /path' contains this")
    parser.add_argument("--shrink", action="store_true", help="minimise each failure with Hypothesis")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds the server may take per request")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home and server log")
    parser.add_argument("--noise", type=int, default=0, metavar="THREADS",
                        help="threads sending well-formed requests on the same files and queue meanwhile (races)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="nodegraph-fuzz-"))
    sandbox = Sandbox(root)
    server = ServerProcess(sandbox)
    report = Report()
    t0 = time.monotonic()
    try:
        document = fetch_json(server, "/openapi.json")
        catalogue = fetch_json(server, "/object_info")
        ops = operations(document, args.only)
        print(f"fuzzing {len(ops)} operations, {args.examples} examples each (server log: {sandbox.log})", flush=True)
        with Noise(server, args.noise, noise_check(server, report, args.timeout)):
            fuzz(server, ops, catalogue, args.examples, report, args.timeout, args.shrink, args.seed,
                 progress=lambda line: print(line, flush=True))
        errors = finish(server, sandbox, report)
    finally:
        server.stop()
    print(report.summary())
    for error in errors:
        print("ERROR", error)
    print(f"{sum(report.requests.values())} requests, {sum(report.failures.values())} failures, "
          f"{len(report.findings)} distinct, {len(errors)} errors after the run, {time.monotonic() - t0:.0f} s")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if report.failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
