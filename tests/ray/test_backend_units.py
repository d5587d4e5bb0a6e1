"""The backend pieces that need no cluster: routing, file shipping, the worker actor class in-process, and the
server running one queue thread per backend slot."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from ray_helpers import checkpoint_graph, make_config, make_engine

from nodegraph.backends import LocalBackend, create_backend
from nodegraph.backends.ray_worker import RunSummary, Shipped, WorkerActor
from nodegraph.backends.routing import KeyMemory, RunTrack, WorkerInfo, WorkerSlot, choose, lacking, requirements
from nodegraph.backends.shipping import ShippedFile, collect_files, rename_entries, store_files
from nodegraph.events import EventBus, NodeFinished, RunInterrupted
from nodegraph.server import ServerSettings, create_app


def event_shapes(events):
    """Events without their run id, comparable across runs."""
    return [(type(e).__name__, {k: v for k, v in vars(e).items() if k != "run_id"}) for e in events]


def test_catalogue_check_names_missing_and_different_versions(tmp_path: Path):
    engine = make_engine(tmp_path)
    needs = requirements(engine.prepare(checkpoint_graph()))
    assert set(needs) == {"FakeCheckpoint", "Generate"}
    assert lacking(dict(needs), needs) == []
    assert lacking({"Generate": needs["Generate"]}, needs) == ["FakeCheckpoint is not installed"]
    other = dict(needs, Generate="9.0.0")
    assert lacking(other, needs) == [f"Generate is 9.0.0, the head has {needs['Generate']}"]


def test_choose_prefers_cached_work_then_least_busy_then_least_recent():
    def slot(name, keys=(), busy=0, last=0.0):
        s = WorkerSlot(name, None, WorkerInfo(name, {}), busy=busy, last_used=last)
        for k, sec in keys:
            s.memory.add(k, sec)
        return s

    a, b = slot("a", [("ckpt", 2.0)], last=5.0), slot("b", [("text", 0.1)], last=1.0)
    assert choose([a, b], ["ckpt", "text"]) is a  # two seconds of loading beat a tenth of encoding
    assert choose([a, b], ["other"]) is b  # no affinity: the least recently used
    assert choose([slot("x", busy=1), slot("y", busy=0, last=9.0)], ["k"]).name == "y"


def test_key_memory_is_bounded_and_refreshed():
    memory = KeyMemory(max_entries=2)
    memory.add("a", 1.0)
    memory.add("b", 1.0)
    memory.touch("a")
    memory.add("c", 1.0)  # evicts b, the least recently used
    assert "a" in memory and "c" in memory and "b" not in memory and len(memory) == 2
    assert memory.score(["a", "b", "c"]) == pytest.approx(2.0)


def test_track_remembers_executed_non_volatile_nodes():
    track = RunTrack()
    track.node_started("1", "Loader")
    time.sleep(0.01)
    track.node_finished("1", cached=False)
    track.node_started("2", "Noise")
    track.node_finished("2", cached=False)
    memory = KeyMemory()
    track.remember(memory, {"1": "k1", "2": "k2"}, volatile={"2"})
    assert "k1" in memory and "k2" not in memory and memory.score(["k1"]) >= 0.01
    assert track.executed == ["1", "2"] and (track.node, track.class_type) == ("2", "Noise")


def test_shipped_files_land_in_the_heads_folder_renamed_on_collision(tmp_path: Path):
    worker = make_config(tmp_path / "worker")
    head = make_config(tmp_path / "head")
    (worker.outputs_dir / "sub").mkdir()
    (worker.outputs_dir / "sub" / "img_00001_.png").write_bytes(b"new")
    ui = {"images": [{"filename": "img_00001_.png", "subfolder": "sub", "type": "output"}], "text": ["x"]}
    files = collect_files(worker, ui)
    assert files == [ShippedFile("output", "sub", "img_00001_.png", b"new")]

    (head.outputs_dir / "sub").mkdir()
    (head.outputs_dir / "sub" / "img_00001_.png").write_bytes(b"old")  # another worker's image, same name
    renamed = store_files(head, files)
    assert renamed == {("output", "sub", "img_00001_.png"): "img_00001_-1.png"}
    assert (head.outputs_dir / "sub" / "img_00001_.png").read_bytes() == b"old"
    assert (head.outputs_dir / "sub" / "img_00001_-1.png").read_bytes() == b"new"
    assert rename_entries(ui, renamed)["images"][0]["filename"] == "img_00001_-1.png"
    assert store_files(head, files) == {("output", "sub", "img_00001_.png"): "img_00001_-1.png"}  # same bytes
    bad = [ShippedFile("output", "../..", "evil.png", b"x")]
    with pytest.raises(ValueError):
        store_files(head, bad)


def test_worker_actor_streams_the_engines_events_then_a_summary(tmp_path: Path):
    engine = make_engine(tmp_path / "local")
    local = []
    engine.run(engine.prepare(checkpoint_graph(preview=True)), bus=EventBus([local.append]), run_id="r")
    actor = WorkerActor(make_config(tmp_path / "w", Path(__file__).parent / "plugins"), "w0")
    assert actor.info().nodes["Generate"] == engine.registry.get("Generate").meta.version
    items = list(actor.run(checkpoint_graph(preview=True), ["2"], "r", {}))
    assert isinstance(items[-1], RunSummary) and items[-1].status == "success"
    assert items[-1].outputs == {"2": {"text": ["model-a|1"]}} and items[-1].executed == ("1", "2")
    assert event_shapes(items[:-1]) == event_shapes(local)
    again = list(actor.run(checkpoint_graph(seed=2), ["2"], "r2", {}))
    assert again[-1].cached == ("1",)  # the loaded 'model' stayed in the worker's cache


def test_worker_actor_ships_files_and_stops_when_the_stream_closes(tmp_path: Path):
    actor = WorkerActor(make_config(tmp_path / "w", Path(__file__).parent / "plugins"), "w0")
    items = list(actor.run(checkpoint_graph(tag="f", save=True), ["2"], "r", {}, True))
    shipped = [i for i in items if isinstance(i, Shipped)]
    assert len(shipped) == 1 and shipped[0].files[0].data == b"f:1"
    assert isinstance(shipped[0].event, NodeFinished) and shipped[0].event.node_id == "2"

    stream = actor.run(checkpoint_graph(steps=1000, step_ms=10), ["2"], "long", {})
    first = next(stream)
    assert type(first).__name__ == "RunStarted" and actor.interrupt("long") and not actor.interrupt("other")
    rest = list(stream)
    assert isinstance(rest[-2], RunInterrupted) and rest[-1].status == "interrupted"

    stream = actor.run(checkpoint_graph(steps=1000, step_ms=10, seed=5), ["2"], "closed", {})
    next(stream)
    stream.close()  # what ray.cancel does to the generator: the engine stops at its next check
    deadline = time.monotonic() + 5
    while actor.engine.executor._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not actor.engine.executor._lock.locked()


def test_worker_actor_reports_a_prompt_it_cannot_run(tmp_path: Path):
    actor = WorkerActor(make_config(tmp_path / "w"), "w0")  # no test plugins
    items = list(actor.run(checkpoint_graph(), ["2"], "r", {}))
    assert items[-1].status == "error" and items[-1].error.exception_type == "ValidationReport"
    assert "FakeCheckpoint" in items[-1].error.exception_message


def test_create_backend_local_and_unknown(tmp_path: Path):
    engine = make_engine(tmp_path)
    backend = create_backend("local", engine)
    assert isinstance(backend, LocalBackend) and backend.slots == 1
    result = backend.run(engine.prepare(checkpoint_graph()), run_id="x")
    assert result.status == "success" and result.run_id == "x"
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("dask", engine)


class TwoEngines:
    """A two-slot backend of two in-process engines (what the server sees of two Ray workers)."""

    slots = 2

    def __init__(self, home: Path) -> None:
        self.engines = [make_engine(home), make_engine(home)]
        self._free = list(self.engines)
        self._lock = threading.Lock()
        self.concurrent = 0
        self.peak = 0

    def run(self, prompt, *, run_id=None, extra_data=None, bus=None, interrupt=None):
        with self._lock:
            engine = self._free.pop()
            self.concurrent += 1
            self.peak = max(self.peak, self.concurrent)
        try:
            return engine.run(prompt, run_id=run_id, extra_data=extra_data, bus=bus, interrupt=interrupt)
        finally:
            with self._lock:
                self.concurrent -= 1
                self._free.append(engine)

    def free(self, unload_models=True):
        for engine in self.engines:
            engine.free(unload_models)

    def close(self):
        pass


@pytest.mark.asyncio
async def test_server_runs_one_prompt_per_backend_slot(tmp_path: Path, aiohttp_server, aiohttp_client):
    engine = make_engine(tmp_path)
    backend = TwoEngines(tmp_path)
    client = await aiohttp_client(await aiohttp_server(create_app(engine, ServerSettings(), backend)))
    ids = []
    for seed in range(4):
        body = await (await client.post("/prompt", json={"prompt": checkpoint_graph(seed=seed, steps=20,
                                                                                      step_ms=15)})).json()
        ids.append(body["prompt_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        history = await (await client.get("/history")).json()
        if all(i in history for i in ids):
            break
        await asyncio.sleep(0.05)
    assert all(history[i]["status"]["status_str"] == "success" for i in ids)
    assert backend.peak == 2
