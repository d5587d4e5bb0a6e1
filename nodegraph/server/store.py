"""The durable queue and history: one SQLite table of prompts in the user folder (WAL, stdlib ``sqlite3``).

Every prompt is one row whose ``state`` moves pending → running → success | error | interrupted (or is deleted
while pending). Ordering follows ComfyUI: ascending ``number`` (``front`` submissions get negative numbers), then
submission order. History is the finished rows, oldest first, trimmed to ``max_history`` entries.

Restart policy: when the server starts, rows still ``pending`` simply run again in their order. A row found
``running`` belonged to a process that died mid-prompt; it is put back at the head of the queue once
(``attempts`` counts how often it was started). If it was already re-queued before (it was running during two
crashes in a row, so it may be what kills the process), it is not retried: it lands in history as an error whose
message says the server stopped while it ran. A graceful shutdown (Ctrl-C, SIGTERM) interrupts the running prompt
and re-queues it without counting an attempt. History rows and the output files they name are never touched.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import jsonsafe

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    client_id TEXT,
    state TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    outputs TEXT NOT NULL DEFAULT '{}',
    messages TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    finish_seq INTEGER
);
CREATE INDEX IF NOT EXISTS prompts_queue ON prompts (state, number, seq);
CREATE INDEX IF NOT EXISTS prompts_history ON prompts (finish_seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

PENDING, RUNNING = "pending", "running"
FINISHED = ("success", "error", "interrupted")
#: How many times a prompt may be started before a crash during it marks it failed instead of re-queued.
MAX_ATTEMPTS = 2
CRASH_MESSAGE = ("the server stopped while this prompt was running, twice; it was not retried again. "
                 "Check the server log (out of memory?) and queue it again")


class DamagedStoreError(RuntimeError):
    """The queue database cannot be read; the message names the file and the fix."""


class QueueFullError(RuntimeError):
    """The pending queue reached its cap."""


class DuplicatePromptError(ValueError):
    """A prompt with this id already exists."""


@dataclass
class QueueItem:
    """One stored prompt."""

    prompt_id: str
    number: float
    client_id: str | None
    state: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    attempts: int = 0
    #: The stored fields that could not be read (the row is damaged), empty when healthy.
    damaged: list[str] = field(default_factory=list)

    def queue_entry(self) -> list[Any]:
        """ComfyUI's ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
        number = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    def history_entry(self) -> dict[str, Any]:
        """ComfyUI's history entry ``{prompt, outputs, status, meta}``."""
        status_str = "success" if self.state == "success" else "error"
        return {"prompt": self.queue_entry(), "outputs": self.outputs,
                "status": {"status_str": status_str, "completed": self.state == "success",
                           "messages": self.messages},
                "meta": {nid: {"node_id": nid, "display_node": nid} for nid in self.outputs}}


_COLUMNS = "prompt_id, number, client_id, state, prompt, extra_data, outputs_to_execute, outputs, messages, attempts"


_FIELDS = (("prompt", 4, dict), ("extra_data", 5, dict), ("outputs_to_execute", 6, list), ("outputs", 7, dict),
           ("messages", 8, list))


def _load(text: Any, kind: type) -> Any:
    """A stored JSON column parsed, or None when it does not parse to a ``kind``."""
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, kind) else None


def _item(row: tuple) -> QueueItem:
    """A row as a QueueItem; a field that does not parse (a damaged row) gets an empty value and is named in
    ``damaged``, so one bad row never breaks a listing."""
    damaged: list[str] = []
    values: dict[str, Any] = {}
    for name, index, kind in _FIELDS:
        values[name] = _load(row[index], kind)
        if values[name] is None:
            damaged.append(name)
            values[name] = kind()
    number = row[1] if isinstance(row[1], (int, float)) and row[1] == row[1] else 0.0
    if number != row[1]:
        damaged.append("number")
    return QueueItem(str(row[0]), number, row[2] if isinstance(row[2], str) else None, str(row[3]),
                     attempts=row[9] if isinstance(row[9], int) else 0, damaged=damaged, **values)


def damaged_message(item: QueueItem) -> list[Any]:
    """The ``execution_error`` history message of a prompt whose stored row could not be read."""
    return ["execution_error", {
        "prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_message": f"the stored prompt is damaged ({', '.join(item.damaged)} could not be read), so it "
                             "was not run; queue it again", "exception_type": "DamagedQueueEntry", "traceback": [],
        "current_inputs": {}, "current_outputs": {}, "timestamp": int(time.time() * 1000)}]


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error means the file is damaged or not a database (not, e.g., locked by another process)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    return not isinstance(exc, sqlite3.OperationalError)


class QueueStore:
    """Thread-safe access to the prompts database; every method is one short transaction."""

    def __init__(self, path: Path, max_pending: int = 1000, max_history: int = 10000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending
        self.max_history = max_history
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems))
            self._remaining = self._count_remaining(self._db)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if not _is_damage(exc):
                raise
            raise DamagedStoreError(
                f"the queue database {self.path} is damaged ({exc}); start the server with `nodegraph serve "
                "--recover` to move it aside and keep every prompt that can still be read, or move the file away "
                "yourself to start with an empty queue and history") from None

    @staticmethod
    def _count_remaining(db: sqlite3.Connection) -> int:
        return db.execute("SELECT COUNT(*) FROM prompts WHERE state IN (?, ?)", (PENDING, RUNNING)).fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _tx(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                remaining = self._count_remaining(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._remaining = remaining
            return result

    # ---- startup ---------------------------------------------------------------------------------------------------

    def recover(self) -> tuple[list[str], list[str]]:
        """Apply the restart policy to rows left ``running``: (re-queued ids, failed ids)."""
        def fn(db: sqlite3.Connection) -> tuple[list[str], list[str]]:
            requeued, failed = [], []
            rows = db.execute("SELECT prompt_id, attempts, messages FROM prompts WHERE state = ?", (RUNNING,))
            for prompt_id, attempts, messages in rows.fetchall():
                if attempts >= MAX_ATTEMPTS:
                    msgs = (_load(messages, list) or []) + [["execution_error", {
                        "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                        "exception_message": CRASH_MESSAGE, "exception_type": "ServerStopped", "traceback": [],
                        "current_inputs": {}, "current_outputs": {}, "timestamp": int(time.time() * 1000)}]]
                    self._finish(db, prompt_id, "error", {}, msgs)
                    failed.append(prompt_id)
                else:
                    low = db.execute("SELECT MIN(number) FROM prompts WHERE state IN (?, ?)",
                                     (PENDING, RUNNING)).fetchone()[0]
                    low = low if isinstance(low, (int, float)) else 0
                    db.execute("UPDATE prompts SET state = ?, number = ? WHERE prompt_id = ?",
                               (PENDING, min(low, 0) - 1, prompt_id))
                    requeued.append(prompt_id)
            return requeued, failed
        return self._tx(fn)

    # ---- queue -----------------------------------------------------------------------------------------------------

    def add(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: Iterable[str],
            client_id: str | None, number: float | None = None, front: bool = False) -> float:
        """Queue a prompt; returns its number. Raises QueueFullError or DuplicatePromptError."""
        def fn(db: sqlite3.Connection) -> float:
            pending = db.execute("SELECT COUNT(*) FROM prompts WHERE state = ?", (PENDING,)).fetchone()[0]
            if pending >= self.max_pending:
                raise QueueFullError(f"the queue holds {pending} pending prompts (the cap); retry later")
            if db.execute("SELECT 1 FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone():
                raise DuplicatePromptError(f"prompt_id {prompt_id!r} is already used; send a new one or none")
            row = db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
            counter = row[0] if row else 0
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('counter', ?)", (counter + 1,))
            num = float(number) if number is not None else float(-counter if front else counter)
            db.execute("INSERT INTO prompts (prompt_id, number, client_id, state, prompt, extra_data, "
                       "outputs_to_execute, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (prompt_id, num, client_id, PENDING, jsonsafe.dumps(prompt), jsonsafe.dumps(extra_data),
                        jsonsafe.dumps(list(outputs)), time.time()))
            return num
        return self._tx(fn)

    def claim_next(self) -> QueueItem | None:
        """Mark the first pending prompt running (counting an attempt) and return it, or None.

        A damaged pending row (its JSON does not parse) is not run: it becomes a failed history entry that says
        why, and the next prompt is taken."""
        def fn(db: sqlite3.Connection) -> QueueItem | None:
            while True:
                row = db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state = ? ORDER BY number, seq LIMIT 1",
                                 (PENDING,)).fetchone()
                if row is None:
                    return None
                item = _item(row)
                if item.damaged:
                    self._finish(db, row[0], "error", {}, [damaged_message(item)])
                    continue
                db.execute("UPDATE prompts SET state = ?, attempts = attempts + 1, started = ? WHERE prompt_id = ?",
                           (RUNNING, time.time(), row[0]))
                item.state, item.attempts = RUNNING, item.attempts + 1
                return item
        return self._tx(fn)

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at the head of the queue without counting the attempt (graceful stop)."""
        def fn(db: sqlite3.Connection) -> None:
            low = db.execute("SELECT MIN(number) FROM prompts WHERE state IN (?, ?)", (PENDING, RUNNING)).fetchone()[0]
            db.execute("UPDATE prompts SET state = ?, number = ?, attempts = MAX(attempts - 1, 0) "
                       "WHERE prompt_id = ? AND state = ?", (PENDING, min(low or 0, 0) - 1, prompt_id, RUNNING))
        self._tx(fn)

    def finish(self, prompt_id: str, state: str, outputs: dict[str, Any], messages: list[Any]) -> None:
        """Record how a prompt ended; it becomes a history entry."""
        self._tx(lambda db: self._finish(db, prompt_id, state, outputs, messages))

    def _finish(self, db: sqlite3.Connection, prompt_id: str, state: str, outputs: dict[str, Any],
                messages: list[Any]) -> None:
        assert state in FINISHED, state
        last = db.execute("SELECT MAX(finish_seq) FROM prompts").fetchone()[0] or 0
        db.execute("UPDATE prompts SET state = ?, outputs = ?, messages = ?, finished = ?, finish_seq = ? "
                   "WHERE prompt_id = ?", (state, jsonsafe.dumps(outputs), jsonsafe.dumps(messages), time.time(),
                                           last + 1, prompt_id))
        count = db.execute("SELECT COUNT(*) FROM prompts WHERE finish_seq IS NOT NULL").fetchone()[0]
        if count > self.max_history:
            db.execute("DELETE FROM prompts WHERE prompt_id IN (SELECT prompt_id FROM prompts WHERE finish_seq "
                       "IS NOT NULL ORDER BY finish_seq LIMIT ?)", (count - self.max_history,))

    def remaining(self) -> int:
        """Pending plus running prompts (ComfyUI's ``queue_remaining``), as of the last change (no I/O)."""
        return self._remaining

    def queue(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending) in execution order."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE state IN (?, ?) ORDER BY number, seq",
                                    (PENDING, RUNNING)).fetchall()
        items = [_item(r) for r in rows]
        return [i for i in items if i.state == RUNNING], [i for i in items if i.state == PENDING]

    def delete_pending(self, prompt_ids: Iterable[str] | None = None) -> int:
        """Delete the given pending prompts (all when None); returns how many."""
        ids = None if prompt_ids is None else [str(p) for p in prompt_ids]

        def fn(db: sqlite3.Connection) -> int:
            if ids is None:
                return db.execute("DELETE FROM prompts WHERE state = ?", (PENDING,)).rowcount
            return sum(db.execute("DELETE FROM prompts WHERE state = ? AND prompt_id = ?", (PENDING, p)).rowcount
                       for p in ids)
        return self._tx(fn)

    # ---- history ---------------------------------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> list[QueueItem]:
        """Finished prompts oldest first; like ComfyUI, a negative offset with max_items means the latest ones."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE finish_seq IS NOT NULL").fetchone()[0]
            if offset < 0:
                offset = max(total - max_items, 0) if max_items is not None else 0
            limit = -1 if max_items is None else max(max_items, 0)
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE finish_seq IS NOT NULL "
                                    "ORDER BY finish_seq LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [_item(r) for r in rows]

    def get(self, prompt_id: str) -> QueueItem | None:
        """One prompt in any state, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM prompts WHERE prompt_id = ?", (prompt_id,)).fetchone()
        return _item(row) if row else None

    def jobs(self, states: Iterable[str], limit: int | None = None, offset: int = 0, prompt_id: str | None = None,
             ) -> tuple[int, list[tuple[QueueItem, float, float | None, float | None]]]:
        """Prompts in ``states`` newest first with their (created, started, finished) times: (total, page)."""
        states = list(states)
        where = f"state IN ({', '.join('?' * len(states))})" + (" AND prompt_id = ?" if prompt_id else "")
        args: list[Any] = states + ([prompt_id] if prompt_id else [])
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM prompts WHERE {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT {_COLUMNS}, created, started, finished FROM prompts WHERE {where} "
                                    "ORDER BY created DESC, seq DESC LIMIT ? OFFSET ?",
                                    args + [-1 if limit is None else max(limit, 0), max(offset, 0)]).fetchall()
        return total, [(_item(r[:10]), r[10], r[11], r[12]) for r in rows]

    def delete_history(self, prompt_ids: Iterable[str] | None = None) -> int:
        """Delete the given history entries (all when None); returns how many."""
        ids = None if prompt_ids is None else [str(p) for p in prompt_ids]
        finished = "finish_seq IS NOT NULL"

        def fn(db: sqlite3.Connection) -> int:
            if ids is None:
                return db.execute(f"DELETE FROM prompts WHERE {finished}").rowcount
            return sum(db.execute(f"DELETE FROM prompts WHERE {finished} AND prompt_id = ?", (p,)).rowcount
                       for p in ids)
        return self._tx(fn)
