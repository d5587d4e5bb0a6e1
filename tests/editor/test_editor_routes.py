"""The routes the editor needs, against a real server on a loopback port: users, settings, user files, jobs,
templates, extensions and the frontend's static files."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio
from yarl import URL

from nodegraph.server import ServerSettings, create_app
from nodegraph.server.routes.userdata import SEEDED_SETTINGS
from nodegraph.ui_format import ui_to_api

from .helpers import WORKFLOWS

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def client(aiohttp_server, aiohttp_client, engine):
    server = await aiohttp_server(create_app(engine, ServerSettings()))
    return await aiohttp_client(server)


def raw(client, path: str) -> URL:
    """An absolute URL whose %2F stays encoded, as the editor sends user file names (use with client.session)."""
    return URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)


async def test_frontend_page_static_files_and_core_shims(client):
    page = await client.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    html = await page.text()
    assert '<div id="vue-app">' in html
    asset = html.split('<script type="module" crossorigin src="./')[1].split('"')[0]
    js = await client.get("/" + asset)
    assert js.status == 200 and "javascript" in js.headers["Content-Type"]
    shim = await client.get("/extensions/core/widgetInputs.js")
    assert shim.status == 200 and "comfyAPI" in await shim.text()
    css = await client.get("/user.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    # Static files never shadow the API, and are not served under /api.
    assert (await client.get("/api/index.html")).status == 404
    assert (await client.get("/object_info/SaveImage")).status == 200
    assert (await client.get("/../../etc/passwd")).status in (403, 404)


async def test_extensions_listed_and_served(client):
    urls = await (await client.get("/api/extensions")).json()
    assert urls[0] == "/extensions/nodegraph-core/default_graph.js"
    assert "/extensions/editor_test_nodes/mark.js" in urls
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 200, url
        assert "javascript" in resp.headers["Content-Type"]
    assert (await client.get("/extensions/nodegraph-core/..%2F..%2Fapp.py")).status in (403, 404)


async def test_users_and_settings_persist(client, engine):
    assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
    assert await (await client.get("/api/settings")).json() == SEEDED_SETTINGS
    assert (await client.post("/api/settings/Comfy.Theme", data=json.dumps("dark"))).status == 200
    assert (await client.post("/api/settings", json={"Comfy.TutorialCompleted": False, "a.b": [1, 2]})).status == 200
    assert await (await client.get("/api/settings/Comfy.Theme")).json() == "dark"
    assert await (await client.get("/api/settings/unset")).json() is None
    values = await (await client.get("/api/settings")).json()
    assert values == {"Comfy.TutorialCompleted": False, "Comfy.Notification.ShowVersionUpdates": False,
                      "Comfy.Theme": "dark", "a.b": [1, 2]}
    stored = json.loads((engine.config.user_dir / "default" / "comfy.settings.json").read_text())
    assert stored["Comfy.Theme"] == "dark"
    assert (await client.post("/api/settings", data="[1]")).status == 400
    assert (await client.post("/api/settings/x", data="{not json")).status == 400


async def test_userdata_save_list_move_delete(client, engine):
    body = json.dumps({"nodes": [], "links": []})
    resp = await client.session.post(raw(client, "/api/userdata/workflows%2Fa%20b.json?overwrite=false&full_info=true"),
                             data=body)
    info = await resp.json()
    assert resp.status == 200 and info["path"] == "workflows/a b.json" and info["size"] == len(body)
    assert (await client.session.post(raw(client, "/api/userdata/workflows%2Fa%20b.json?overwrite=false"),
                              data="x")).status == 409
    assert (engine.config.user_dir / "default" / "workflows" / "a b.json").read_text() == body
    listing = await (await client.get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")).json()
    assert [(e["path"], e["size"]) for e in listing] == [("a b.json", len(body))]
    assert listing[0]["modified"] > 1e12  # milliseconds, as the editor compares it with Date.now()
    assert await (await client.get("/api/userdata?dir=workflows&split=true")).json() == [["a b.json", "a b.json"]]
    assert await (await client.get("/api/userdata?dir=nothing-yet")).json() == []
    assert await (await client.session.get(raw(client, "/api/userdata/workflows%2Fa%20b.json"))).text() == body
    moved = await client.session.post(raw(client, "/api/userdata/workflows%2Fa%20b.json/move/workflows%2Fsub%2Fc.json"))
    assert moved.status == 200
    assert (await client.session.get(raw(client, "/api/userdata/workflows%2Fa%20b.json"))).status == 404
    assert await (await client.get("/api/userdata?dir=workflows&recurse=true")).json() == ["sub/c.json"]
    css = await client.session.post(raw(client, "/api/userdata/user.css"), data="body {}")
    assert css.status == 200
    css = await client.session.get(raw(client, "/api/userdata/user.css"))
    assert css.headers["Content-Type"].startswith("text/css") and await css.text() == "body {}"
    moved_back = await client.session.get(raw(client, "/api/userdata/workflows%2Fsub%2Fc.json"))
    assert moved_back.headers["Content-Type"].startswith("application/json")
    assert (await client.session.delete(raw(client, "/api/userdata/workflows%2Fsub%2Fc.json"))).status == 204
    assert (await client.session.delete(raw(client, "/api/userdata/workflows%2Fsub%2Fc.json"))).status == 404
    assert (await client.get("/api/userdata")).status == 400


async def test_userdata_refuses_escapes_and_oversize(client, engine):
    engine.config.ensure_dirs()
    secret = engine.config.user_dir / "queue.sqlite3"
    assert secret.exists()  # the queue database sits beside the served folder
    for path in ("..%2Fqueue.sqlite3", "..%2F..%2Fuser%2Fqueue.sqlite3", "%2Fetc%2Fpasswd", "a%5C..%5C..%5Cx"):
        assert (await client.session.get(raw(client, f"/api/userdata/{path}"))).status == 403, path
        assert (await client.session.post(raw(client, f"/api/userdata/{path}"), data="x")).status == 403, path
    assert (await client.session.post(raw(client, "/api/userdata/ok.json/move/..%2Fqueue.sqlite3"))).status == 403
    assert (await client.get("/api/userdata?dir=..")).status == 403
    big = b"x" * (20 * 1024 * 1024 + 1)
    assert (await client.session.post(raw(client, "/api/userdata/big.bin"), data=big)).status == 413
    assert not (engine.config.user_dir / "default" / "big.bin").exists()


async def wait_finished(client, job_id, timeout=20.0):
    for _ in range(int(timeout / 0.05)):
        job = await (await client.get(f"/api/jobs/{job_id}")).json()
        if job["status"] not in ("pending", "in_progress"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


async def test_jobs_list_detail_assets_and_cancel(client):
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 2, "color": 9}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "jobs"}}}
    workflow = {"id": "wf-1", "nodes": [], "links": []}
    done = await (await client.post("/api/prompt", json={"prompt": graph, "extra_data": {
        "extra_pnginfo": {"workflow": workflow}}})).json()
    job = await wait_finished(client, done["prompt_id"])
    assert job["status"] == "completed" and job["workflow_id"] == "wf-1"
    assert job["outputs_count"] == job["previewable_outputs_count"] == 2
    assert job["preview_output"] == {"filename": "jobs_00001_.png", "subfolder": "", "type": "output",
                                     "nodeId": "2", "mediaType": "images"}
    assert job["create_time"] <= job["execution_start_time"] <= job["execution_end_time"]
    assert job["workflow"]["extra_data"]["extra_pnginfo"]["workflow"] == workflow
    assert job["outputs"]["2"]["images"][1]["filename"] == "jobs_00002_.png"
    assets = await (await client.get(f"/api/jobs/{done['prompt_id']}/assets")).json()
    assert [a["name"] for a in assets["assets"]] == ["jobs_00001_.png", "jobs_00002_.png"]
    view = await client.get(assets["assets"][0]["preview_url"])
    assert view.status == 200 and view.headers["Content-Type"] == "image/png"

    slow = {"1": {"class_type": "SlowInvert", "inputs": {"image": ["2", 0], "seed": 0, "steps": 200,
                                                         "step_ms": 50}},
            "2": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "slow"}}}
    running = (await (await client.post("/api/prompt", json={"prompt": slow})).json())["prompt_id"]
    pending = (await (await client.post("/api/prompt", json={"prompt": slow})).json())["prompt_id"]
    for _ in range(200):
        active = await (await client.get("/api/jobs?status=in_progress,pending&limit=10")).json()
        if [j["status"] for j in active["jobs"]] == ["pending", "in_progress"]:
            break
        await asyncio.sleep(0.05)
    assert [j["id"] for j in active["jobs"]] == [pending, running]  # newest first
    assert active["pagination"] == {"offset": 0, "limit": 10, "total": 2, "has_more": False}
    assert "priority" in active["jobs"][0]
    page = await (await client.get("/api/jobs?limit=1&offset=1")).json()
    assert len(page["jobs"]) == 1 and page["pagination"]["has_more"] is True and page["pagination"]["total"] == 3

    assert (await client.post(f"/api/jobs/{pending}/cancel")).status == 200
    assert (await client.get(f"/api/jobs/{pending}")).status == 404  # a cancelled pending job is gone
    cancelled = await (await client.post("/api/jobs/cancel", json={"job_ids": [running, "nope"]})).json()
    assert cancelled == {"cancelled": [running]}
    assert (await wait_finished(client, running))["status"] == "cancelled"
    assert (await client.post("/api/jobs/nope/cancel")).status == 404
    assert (await client.get("/api/jobs?status=bogus")).status == 400

    bad = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
           "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../../x"}}}
    failed_id = (await (await client.post("/api/prompt", json={"prompt": bad})).json())["prompt_id"]
    failed = await wait_finished(client, failed_id)
    assert failed["status"] == "failed"
    err = failed["execution_error"]
    assert err["node_id"] == "2" and err["node_type"] == "SaveImage" and err["exception_message"]
    assert all(isinstance(line, str) for line in err["traceback"])
    history = await (await client.get("/api/jobs?status=completed,failed,cancelled")).json()
    assert [j["status"] for j in history["jobs"]] == ["failed", "cancelled", "completed"]


async def test_templates_are_the_shipped_workflows_in_ui_format(client, engine):
    names = await (await client.get("/api/workflow_templates")).json()
    shipped = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    assert names == ({"nodegraph": shipped} if shipped else {})
    for name in shipped:
        ui = await (await client.get(f"/api/workflow_templates/nodegraph/{name}.json")).json()
        api = json.loads((WORKFLOWS / f"{name}.json").read_text())
        assert ui_to_api(ui, engine.registry) == api, name
    assert (await client.get("/api/workflow_templates/nodegraph/nope.json")).status == 404
    assert (await client.get("/api/workflow_templates/nodegraph/..%2F..%2Fpyproject.json")).status in (403, 404)
    assert (await client.get("/api/workflow_templates/other/txt2img.json")).status == 404
    assert await (await client.get("/templates/index.json")).json() == []


async def test_startup_routes(client):
    assert await (await client.get("/api/i18n")).json() == {}
    listed = await (await client.get("/api/global_subgraphs")).json()  # nodegraph's shipped blueprint(s)
    assert "shapes_txt2img" in {entry["name"] for entry in listed.values()}
    kinds = await (await client.get("/api/experiment/models")).json()
    assert {"checkpoints", "loras", "vae"} <= {k["name"] for k in kinds}
    assert await (await client.get("/api/experiment/models/checkpoints")).json() == []
    assert (await client.get("/api/experiment/models/nope")).status == 404
