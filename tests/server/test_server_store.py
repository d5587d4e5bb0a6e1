"""The SQLite queue store: ordering, caps, history trimming, and the restart policy."""

from __future__ import annotations

import pytest

from nodegraph.server.store import CRASH_MESSAGE, DuplicatePromptError, QueueFullError, QueueStore


def add(store, pid, **kw):
    return store.add(pid, {"1": {"class_type": "X"}}, {}, ["1"], "c", **kw)


def test_order_caps_and_history(tmp_path):
    store = QueueStore(tmp_path / "q.db", max_pending=4, max_history=2)
    assert [add(store, "a"), add(store, "b"), add(store, "c", front=True), add(store, "d", number=0.5)] == \
        [0, 1, -2, 0.5]
    with pytest.raises(QueueFullError):
        add(store, "e")
    assert store.delete_pending(["d", "unknown"]) == 1
    with pytest.raises(DuplicatePromptError):
        add(store, "a")
    assert [store.claim_next().prompt_id for _ in range(3)] == ["c", "a", "b"]
    assert store.claim_next() is None and store.remaining() == 3
    for pid in ("c", "a", "b"):
        store.finish(pid, "success", {"1": {"text": [pid]}}, [])
    assert [i.prompt_id for i in store.history()] == ["a", "b"]  # trimmed to the newest two
    assert store.remaining() == 0
    store.close()


def test_restart_requeues_once_then_marks_failed(tmp_path):
    path = tmp_path / "q.db"
    store = QueueStore(path)
    add(store, "crashy")
    add(store, "next")
    assert store.claim_next().prompt_id == "crashy"
    store.close()  # the process "dies" with crashy running

    store = QueueStore(path)
    assert store.recover() == (["crashy"], [])
    running, pending = store.queue()
    assert running == [] and [i.prompt_id for i in pending] == ["crashy", "next"]
    item = store.claim_next()
    assert item.prompt_id == "crashy" and item.attempts == 2
    store.close()  # and dies again during the same prompt

    store = QueueStore(path)
    assert store.recover() == ([], ["crashy"])
    entry = store.get("crashy").history_entry()
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][1]["exception_message"] == CRASH_MESSAGE
    assert [i.prompt_id for i in store.queue()[1]] == ["next"]

    # A graceful stop re-queues without counting the attempt.
    assert store.claim_next().prompt_id == "next"
    store.requeue("next")
    assert store.claim_next().attempts == 1
    store.close()
