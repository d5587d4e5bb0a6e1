"""Remote runs through Client/AsyncClient against a real server on a loopback port (token required)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import TXT2IMG, txt2img
from PIL import Image

from nodegraph.events import NodeProgress, NodeStarted, RunFinished
from nodegraph.pyapi import AsyncClient, Client, Graph, Workflow
from nodegraph.pyapi.client import ServerError
from nodegraph.pyapi.remote import PromptRejected

pytestmark = pytest.mark.slow
TOKEN = "pyapi-test-token-0123456789"


@pytest.fixture
def server(nodegraph_server, shapes_engine) -> str:
    return nodegraph_server(shapes_engine, token=TOKEN)


def test_client_runs_a_graph_built_against_the_server_catalogue(server, tmp_path) -> None:
    with Client(server, token=TOKEN) as client:
        g = client.graph()
        h = txt2img(g, seed=5)
        events: list = []
        result = client.run(g, on_event=events.append)
        assert result.ok and set(result.executed) | set(result.cached) == set(g.to_api())
        (image,) = result[h["save"]]
        assert isinstance(image, Image.Image) and image.size == (64, 64)
        assert result.manifest and result.manifest["models"]  # read from the downloaded PNG
        assert [p.name for p in result.save(tmp_path)] == [r["filename"] for r in result.refs(h["save"])]
        kinds = [type(e) for e in events]
        assert NodeStarted in kinds and NodeProgress in kinds and kinds[-1] is RunFinished
        with pytest.raises(KeyError, match="not available from a server run"):
            result.value(h["sampled"])
        again = client.run(g, set={f"{h['sampled'].node_id}.seed": 6})
        assert again.executed == [h["sampled"].node_id, h["image"].node_id, h["save"].node_id]


def test_uploads_local_images_for_load_image(server, shapes_engine) -> None:
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    with Client(server, token=TOKEN) as client:
        g = client.graph()
        image, _mask = g.LoadImage(image=picture)
        save = g.SaveImage(images=g.ImageInvert(image=image), filename_prefix="inverted")
        (out,) = client.run(g)[save]
    assert out.getpixel((10, 10)) == (55, 225, 225)
    assert any(p.name.startswith("pyapi-") for p in shapes_engine.config.input_dir.iterdir())


def test_many_prompts_in_flight_and_rejections(server) -> None:
    wf = Workflow.load(TXT2IMG)
    with Client(server, token=TOKEN, concurrency=3) as client:
        prompts = [wf.with_set({"3.seed": s, "3.steps": 2}) for s in range(4)]
        results = client.run_many(prompts)
        assert [r.ok for r in results] == [True] * 4 and len({r.prompt_id for r in results}) == 4
        with pytest.raises(PromptRejected, match="steps"):
            client.run(wf, set={"3.steps": 0})
    with Client(server, token="wrong-token-0123456789") as client, pytest.raises(ServerError, match="token"):
        client.run(wf)


def test_cancel_a_running_prompt(server) -> None:
    with Client(server, token=TOKEN) as client:
        g = client.graph()
        txt2img(g, seed=77, steps=200)
        prompt_id = client.submit(g)
        progressed = threading.Event()
        out: list = []
        waiter = threading.Thread(target=lambda: out.append(client.wait(
            prompt_id, raise_on_error=False,
            on_event=lambda e: progressed.set() if isinstance(e, NodeProgress) else None)))
        waiter.start()
        assert progressed.wait(120)
        queued = client.submit(g, set={"5.seed": 78})  # waits behind the running one
        client.cancel(queued)
        dropped = client.wait(queued, raise_on_error=False)
        assert dropped.status == "interrupted" and dropped.executed == []
        client.cancel(prompt_id)
        waiter.join(120)
    assert out and out[0].status == "interrupted"


def test_async_client_streams_events_and_sweeps(server) -> None:
    async def main() -> tuple[list, object]:
        async with AsyncClient(server, token=TOKEN) as client:
            g = Graph(catalogue=await client.catalogue())
            txt2img(g, seed=9)
            kinds = [type(e) async for e in client.stream(g)]
            return kinds, client.last_result

    kinds, result = asyncio.run(main())
    assert result.ok and NodeProgress in kinds and kinds[-1] is RunFinished
    with Client(server, token=TOKEN) as client:
        sweep = Workflow.load(TXT2IMG).sweep({"3.seed": [1, 2, 3]}, client=client, set={"3.steps": 2})
    assert [r["3.seed"] for r in sweep.table()] == [1, 2, 3] and all(r.result.ok for r in sweep)
    assert sweep.contact_sheet().width >= 3 * 64
