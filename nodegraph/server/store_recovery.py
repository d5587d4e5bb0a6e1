"""Recovery of a damaged queue database: move it aside and start a fresh one with every row still readable."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .store import DamagedStoreError, QueueStore

_ALL = ("seq, prompt_id, number, client_id, state, prompt, extra_data, outputs_to_execute, outputs, messages, "
        "attempts, created, started, finished, finish_seq")
#: Unreadable rows skipped one by one before salvage gives up on the rest of a damaged file.
MAX_SKIPPED_ROWS = 1000


@dataclass
class Recovery:
    """What ``recover_file`` did: where the damaged file went and how many prompts it kept."""

    moved_to: Path | None
    salvaged: int = 0
    unreadable: int = 0


def _read_rows(path: Path) -> tuple[list[tuple], int, int]:
    """The rows that can still be read from a damaged database, its queue counter, and the rows skipped."""
    rows: list[tuple] = []
    skipped = counter = 0
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, counter, skipped
    try:
        last = 0
        while skipped < MAX_SKIPPED_ROWS:
            try:
                for row in db.execute(f"SELECT {_ALL} FROM prompts WHERE seq > ? ORDER BY seq", (last,)):
                    rows.append(row)
                    last = row[0]
                break
            except sqlite3.Error:  # an unreadable page: step over one row id and read on
                skipped += 1
                last += 1
        try:
            counter = int(db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()[0])
        except (sqlite3.Error, TypeError, ValueError):
            counter = len(rows)
    finally:
        db.close()
    return rows, counter, skipped


def _salvage(path: Path) -> tuple[list[tuple], int, int]:
    """``_read_rows`` of the file as it is, or of a copy whose header claims only the pages the file still has
    (a truncated file is otherwise unreadable from its first page on), whichever keeps more rows."""
    best = _read_rows(path)
    data = bytearray(path.read_bytes()) if path.is_file() else bytearray()
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return best
    page = int.from_bytes(data[16:18], "big")
    page = 65536 if page == 1 else page or 4096
    data[18:20] = b"\x01\x01"  # rollback journal: read the main file alone
    data[28:32] = (len(data) // page).to_bytes(4, "big")
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.sqlite3"
        copy.write_bytes(bytes(data))
        patched = _read_rows(copy)
    return patched if len(patched[0]) > len(best[0]) else best


def recover_file(path: Path) -> Recovery:
    """Move a damaged queue database aside (``NAME.damaged-YYYYmmdd-HHMMSS``, with its -wal/-shm files) and start a
    fresh one holding every row that could still be read; a healthy file is left alone (``moved_to`` None)."""
    path = Path(path)
    try:
        QueueStore(path).close()
        return Recovery(None)
    except DamagedStoreError:
        pass
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            shutil.move(f"{path}{suffix}", f"{aside}{suffix}")
    rows, counter, skipped = _salvage(aside)
    store = QueueStore(path)

    def fn(db: sqlite3.Connection) -> None:
        for row in rows:
            db.execute(f"INSERT OR IGNORE INTO prompts ({_ALL}) VALUES ({', '.join('?' * 15)})", row)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('counter', ?)", (max(counter, len(rows)),))
    try:
        store._tx(fn)
    finally:
        store.close()
    return Recovery(aside, len(rows), skipped)
