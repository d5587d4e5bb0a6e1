"""Damaged state is reported and recovered: a damaged queue file, a damaged row, `nodegraph serve --recover`."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import chain
from test_server_durability import REPO, call, free_port, servers, wait_for  # noqa: F401 (servers is a fixture)

from nodegraph.cli import main
from nodegraph.server.app import DATABASE
from nodegraph.server.store import DamagedStoreError, QueueStore
from nodegraph.server.store_recovery import recover_file

PLUGINS = Path(__file__).resolve().parent / "plugins"


def filled(path: Path, count: int = 40) -> None:
    """A queue database holding ``count`` finished prompts and two pending ones."""
    store = QueueStore(path)
    for i in range(count):
        store.add(f"done-{i}", {"1": {"class_type": "X", "inputs": {"text": "x" * 2000}}}, {}, ["1"], "c")
        store.finish(store.claim_next().prompt_id, "success", {"1": {"text": [str(i)]}}, [])
    store.add("pending-a", chain(1, 2), {}, ["3"], "c")
    store.add("pending-b", chain(2, 2), {}, ["3"], "c")
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def damage(path: Path, how: str) -> None:
    if how == "text":
        path.write_text("this is not a database\n" * 100)
    else:  # truncated to half its size
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("how", ["text", "truncated"])
def test_a_damaged_file_is_named_with_the_fix_and_recover_keeps_what_can_be_read(tmp_path, how, capsys):
    home = tmp_path / "home"
    path = home / "user" / DATABASE
    path.parent.mkdir(parents=True)
    filled(path)
    damage(path, how)
    with pytest.raises(DamagedStoreError, match="--recover") as caught:
        QueueStore(path)
    assert str(path) in str(caught.value)

    # The command line says the same in one line, no traceback, and exits 1.
    code = main(["serve", "--home", str(home), "--port", str(free_port()), "--backend", "local"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and str(path) in err and "--recover" in err

    done = recover_file(path)
    assert done.moved_to is not None and done.moved_to.name.startswith(f"{DATABASE}.damaged-")
    assert done.moved_to.exists() and not Path(f"{path}-wal").exists()
    store = QueueStore(path)
    kept = {i.prompt_id for i in store.history()} | {i.prompt_id for i in store.queue()[1]}
    if how == "text":
        assert kept == set() and done.salvaged == 0
    else:  # the first pages survive a truncation to half
        assert 0 < done.salvaged == len(kept) < 42 and "done-0" in kept
    store.add("new", chain(), {}, ["3"], "c")  # a working queue again
    store.close()
    assert recover_file(path).moved_to is None  # a healthy file is left alone


@pytest.mark.asyncio
async def test_a_damaged_row_becomes_a_failed_history_entry_and_the_queue_goes_on(make_client, engine, caplog):
    path = engine.config.user_dir / DATABASE
    store = QueueStore(path)
    store.add("broken", chain(), {}, ["3"], "c")
    store.add("healthy", chain(3, 3), {}, ["3"], "c")
    store._db.execute("UPDATE prompts SET prompt = '{\"1\": {\"class_type\": ', extra_data = 'NaN]' "
                      "WHERE prompt_id = 'broken'")
    store.close()
    caplog.set_level(logging.ERROR)
    client = await make_client(engine)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        resp = await client.get("/queue")
        assert resp.status == 200, await resp.text()
        history = await (await client.get("/history")).json()
        if "healthy" in history:
            break
        await asyncio.sleep(0.05)
    assert history["healthy"]["status"]["status_str"] == "success"
    broken = history["broken"]
    assert broken["status"]["status_str"] == "error"
    kind, data = broken["status"]["messages"][-1]
    assert kind == "execution_error" and data["exception_type"] == "DamagedQueueEntry"
    assert "prompt, extra_data could not be read" in data["exception_message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.slow
def test_serve_recover_starts_with_the_salvaged_prompts(servers, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    path = home / "user" / DATABASE
    path.parent.mkdir(parents=True)
    filled(path, count=3)
    with sqlite3.connect(path) as db:  # damage a page the rows do not live on: the index of finished prompts
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'prompts_history'").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page)
        handle.write(b"\xff" * page)

    refused = subprocess.run([sys.executable, "-m", "nodegraph.cli", "serve", "--home", str(home), "--port",
                              str(free_port()), "--plugin-dir", str(PLUGINS)], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "--recover" in refused.stderr

    port = free_port()
    servers(port, home, ["-m", "nodegraph.cli", "serve", "--recover"])
    history = call(port, "GET", "/history")
    assert {f"done-{i}" for i in range(3)} <= set(history)
    # The two pending prompts survived too and run on the recovered queue.
    wait_for(lambda: {"pending-a", "pending-b"} <= set(call(port, "GET", "/history")), 60, "the pending prompts")
    assert call(port, "GET", "/history/pending-a")["pending-a"]["outputs"]["3"] == {"text": ["2"]}
    assert list(path.parent.glob(f"{DATABASE}.damaged-*"))
