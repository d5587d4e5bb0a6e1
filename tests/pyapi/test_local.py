"""In-process runs on the embedded model: results by handle, cache reuse, events, cancel and sweeps."""

from __future__ import annotations

import asyncio

import pytest
from conftest import TXT2IMG, txt2img
from PIL import Image

from nodegraph.events import NodeProgress, NodeStarted, RunFinished, RunInterrupted
from nodegraph.pyapi import Graph, Workflow

pytestmark = pytest.mark.slow


def test_graph_run_gives_images_latents_manifest_and_timings(shapes_engine) -> None:
    g = Graph(shapes_engine)
    h = txt2img(g, seed=3)
    seen: list[type] = []
    result = g.run(on_event=lambda e: seen.append(type(e)))
    assert result.ok and sorted(result.executed) == sorted(g.to_api())
    images = result[h["save"]]
    assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].size == (64, 64)
    (path,) = result.paths(h["save"])
    assert path.is_file() and path.parent == shapes_engine.config.outputs_dir
    decoded = result[h["image"]]  # an IMAGE output: PIL, and the tensor itself
    assert isinstance(decoded[0], Image.Image)
    assert tuple(result.tensor(h["image"]).shape) == (1, 64, 64, 3)
    assert result[h["sampled"]]["samples"].ndim == 4  # a LATENT as the next node would receive it
    assert set(result.timings) == set(result.executed) and result.timings[h["sampled"].node_id] > 0
    assert result.manifest and result.manifest["models"]
    assert NodeStarted in seen and NodeProgress in seen and seen[-1] is RunFinished


def test_a_new_seed_reruns_only_the_sampler_and_below(shapes_engine) -> None:
    wf = Workflow.load(TXT2IMG, shapes_engine)
    first = wf.run(set={"3.seed": 11, "3.steps": 2})
    second = wf.run(set={"3.seed": 12, "3.steps": 2})
    assert first.ok and second.ok
    assert second.executed == ["3", "8", "9"]
    assert sorted(second.cached) == ["4", "5", "6", "7"]
    assert first.images()[0].tobytes() != second.images()[0].tobytes()
    again = wf.run(set={"3.seed": 11, "3.steps": 2})
    assert again.images()[0].tobytes() == first.images()[0].tobytes()


def test_bad_overrides_fail_validation_naming_the_node(shapes_engine) -> None:
    from nodegraph.validation import ValidationReport

    wf = Workflow.load(TXT2IMG, shapes_engine)
    with pytest.raises(ValidationReport) as err:
        wf.run(set={"3.steps": 0})
    assert "steps" in err.value.render()


def test_async_stream_yields_the_engine_events_and_can_cancel(shapes_engine) -> None:
    g = Graph(shapes_engine)
    txt2img(g, seed=21, steps=40)

    async def main() -> tuple[list, object]:
        stream = g.stream()
        kinds = []
        async for event in stream:
            kinds.append(type(event))
            if isinstance(event, NodeProgress):
                stream.cancel()
        return kinds, stream.result

    kinds, result = asyncio.run(main())
    assert result.status == "interrupted" and kinds[-1] is RunInterrupted
    assert NodeStarted in kinds and kinds.count(NodeProgress) < 40  # stopped early


def test_local_sweep_reuses_cached_nodes_and_draws_a_contact_sheet(shapes_engine, tmp_path) -> None:
    wf = Workflow.load(TXT2IMG, shapes_engine)
    sweep = wf.sweep({"3.seed": [1, 2], "3.cfg": [3.0, 5.0]}, set={"3.steps": 2})
    assert len(sweep) == 4 and all(row.result.ok for row in sweep)
    table = sweep.table()
    assert [(r["3.seed"], r["3.cfg"]) for r in table] == [(1, 3.0), (1, 5.0), (2, 3.0), (2, 5.0)]
    assert all(r["cached"] >= 4 for r in table[1:])  # loader, encoders and latent came from the cache
    sheet = sweep.contact_sheet()
    assert sheet.width >= 2 * 64 and sheet.height >= 2 * 64
    cell = sheet.crop((sheet.width - 64, sheet.height - 64, sheet.width, sheet.height))
    assert cell.tobytes() == sweep.images()[3].convert("RGB").tobytes()  # bottom right: seed 2, cfg 5
    label = sheet.crop((0, 0, sheet.width, 14)).convert("L")
    assert label.getextrema()[0] < 128  # column labels were drawn
    sheet.save(tmp_path / "sheet.png")
