"""The visual editor end to end: the official ComfyUI frontend (pinned pip package) in Debian's headless Chromium,
driven by Playwright, against a real ``nodegraph serve`` on a loopback port. One server and one browser serve every
check, in order; screenshots and the server log are kept in ``tests/editor/artifacts/``.

Workflows saved by the editor here are run headless with ``nodegraph run`` (UI format and PNG), and their
conversion is compared with what the editor itself queues. ``NODEGRAPH_UPDATE_EDITOR_FIXTURES=1`` copies them to
``tests/editor/fixtures/`` for the browser-free tests.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from nodegraph.cli import main as cli_main
from nodegraph.registry import Registry
from nodegraph.ui_format import ui_to_api
from nodegraph.workflow import read_png_chunks

from .browser import BUILD_RICH_GRAPH, CHROMIUM, DROP_FILE, Server, Session, editor_page
from .helpers import ARTIFACTS, FIXTURES, PLUGINS, WORKFLOWS, strip_meta

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra has it)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", allow_module_level=True)

TXT2IMG = WORKFLOWS / "txt2img.json"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("editor-home"))
    try:
        srv.wait_ready()
        _warm_up_txt2img(srv)
        yield srv
    finally:
        srv.stop()


def _warm_up_txt2img(srv: Server) -> None:
    """Queue txt2img once with another seed, so importing diffusers and loading the embedded model (tens of
    seconds on a busy 2-core machine) overlaps the browser checks; the editor's own Run still samples anew."""
    if not TXT2IMG.exists():
        return
    api = json.loads(TXT2IMG.read_text())
    for node in api.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] += 1
    body = json.dumps({"prompt": api, "client_id": "warm-up"}).encode()
    request = urllib.request.Request(srv.base + "/api/prompt", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30):
        pass


@pytest.fixture(scope="module")
def editor(server: Server):
    with editor_page(server.base, "editor-chromium-") as session:
        yield session


def _headless_run(workflow: Path, home: Path) -> list[Path]:
    """``nodegraph run WORKFLOW`` (with the editor test plugin); the output images it wrote."""
    out = home / "output"
    before = set(out.rglob("*.png")) if out.exists() else set()
    code = cli_main(["run", str(workflow), "--home", str(home), "--plugin-dir", str(PLUGINS)])
    assert code == 0, f"nodegraph run {workflow.name} exited with {code}"
    return sorted(set(out.rglob("*.png")) - before)


def _save_from_editor(editor: Session, name: str) -> dict[str, Any]:
    """Save the open workflow through the editor (Ctrl+S, file name dialog); returns the server's file info."""
    page = editor.page
    page.mouse.click(700, 760)  # focus the canvas
    page.keyboard.press("Control+s")
    name_box = page.get_by_role("dialog").locator("input")
    name_box.fill(name)
    with page.expect_response(lambda r: "/api/userdata/workflows" in r.url and r.request.method == "POST") as resp:
        name_box.press("Enter")
    assert resp.value.status == 200, resp.value.text()
    return resp.value.json()


def _keep_fixture(path: Path, name: str) -> None:
    if os.environ.get("NODEGRAPH_UPDATE_EDITOR_FIXTURES") == "1":
        FIXTURES.mkdir(exist_ok=True)
        shutil.copyfile(path, FIXTURES / name)


# ---- the checks, in order ---------------------------------------------------------------------------------------

def test_editor_loads_with_nodegraph_defaults(editor: Session):
    seconds = editor.open()
    editor.shared["load_seconds"] = round(seconds, 1)
    editor.shot("01-loaded")
    page = editor.page
    # Seeded settings: no tutorial or template dialog on a first visit.
    assert page.get_by_role("dialog").count() == 0
    # nodegraph's extension replaced the frontend's stock default graph (ComfyUI nodes) with our txt2img.
    types = sorted(t for t, _ in editor.nodes())
    if TXT2IMG.exists():
        assert types == sorted(n["class_type"] for n in json.loads(TXT2IMG.read_text()).values())
    assert "UNETLoader" not in types
    # A plugin's web folder is listed by /api/extensions, served, and run by the editor.
    assert page.evaluate("() => window.__editorTestExtension") == "loaded"
    assert any(u.endswith("/extensions/editor_test_nodes/mark.js") for u in editor.requests)


def test_node_library_lists_our_nodes(editor: Session):
    page = editor.page
    page.get_by_test_id("node-library-tab-button").click()
    for category in ("image", "sampling", "loaders", "testing"):
        page.get_by_text(category, exact=True).first.wait_for()
    page.get_by_text("testing", exact=True).first.click()
    page.get_by_text("image", exact=True).first.click()
    for node in ("SlowInvert", "Empty Image", "Save Image", "Invert Image"):
        page.get_by_text(node, exact=True).first.wait_for()
    editor.shot("02-node-library")
    page.get_by_test_id("node-library-tab-button").click()


@pytest.mark.skipif(not TXT2IMG.exists(), reason="workflows/txt2img.json is missing (the diffusion workflows "
                    "are not written yet)")
def test_txt2img_template_loads(editor: Session, server: Server):
    page = editor.page
    page.get_by_role("button", name="Templates").click()
    page.get_by_text("txt2img", exact=True).click()
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'KSampler')")
    page.get_by_role("dialog").wait_for(state="detached")
    editor.shot("03-txt2img-template")
    # What the editor queues from our exported template is exactly the shipped API workflow,
    shipped = strip_meta(json.loads(TXT2IMG.read_text()))
    assert strip_meta(editor.prompt()["output"]) == shipped
    # and so is our conversion of the UI format the editor saves it in (seed + control value, widget order).
    _save_from_editor(editor, "txt2img from editor")
    saved = server.home / "user" / "default" / "workflows" / "txt2img from editor.json"
    ui = json.loads(saved.read_text())
    ksampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert ksampler["widgets_values"][:2] == [shipped["3"]["inputs"]["seed"], "fixed"]
    assert strip_meta(ui_to_api(ui, Registry.load([PLUGINS]))) == shipped
    _keep_fixture(saved, "txt2img.ui.json")


@pytest.mark.skipif(not TXT2IMG.exists(), reason="workflows/txt2img.json is missing (the diffusion workflows "
                    "are not written yet)")
def test_txt2img_run_shows_image_and_progress(editor: Session):
    page = editor.page
    if not page.evaluate("() => app.graph._nodes.some(n => n.type === 'KSampler')"):
        pytest.fail("the txt2img template is not open (see test_txt2img_template_loads)")
    start = time.monotonic()
    _, messages = editor.run(timeout_s=180)
    url = editor.shown_image()
    editor.shared["txt2img_seconds"] = round(time.monotonic() - start, 1)
    assert "/api/view" in url and "txt2img" in url
    assert url in editor.requests
    editor.shot("04-txt2img-result")
    steps = [m["data"] for m in messages if m["type"] == "progress"]
    assert steps and steps[-1]["value"] == steps[-1]["max"] == 20


def test_run_shows_progress_and_image(editor: Session):
    page = editor.page
    page.get_by_role("button", name="Create a new blank workflow").click()  # a new, unsaved tab
    page.wait_for_function("() => app.graph._nodes.length === 0")
    page.evaluate(BUILD_RICH_GRAPH)
    editor.shot("05-rich-graph")
    queued = editor.prompt()
    editor.shared["rich_prompt"] = queued["output"]
    page.evaluate("() => { window.__titles = []; }")
    _, messages = editor.run()
    url = editor.shown_image()
    assert "/api/view" in url and "rich" in url and url in editor.requests
    editor.shot("06-rich-result")
    # Progress: the server streamed every step, and the editor showed a percentage while it ran.
    steps = [m["data"]["value"] for m in messages if m["type"] == "progress"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any("%]" in title for title in page.evaluate("() => window.__titles"))
    # The image it shows is the saved PNG, carrying the API prompt and the editor's workflow.
    png = server_file(editor, url)
    chunks = read_png_chunks(png)
    assert strip_meta(json.loads(chunks["prompt"])) == strip_meta(queued["output"])
    workflow = json.loads(chunks["workflow"])
    assert sorted(n["type"] for n in workflow["nodes"]) == sorted(t for t, _ in editor.nodes())
    editor.shared["png"] = png
    editor.shared["png_url"] = url


def server_file(editor: Session, view_url: str) -> Path:
    """Download what /api/view served into the artifacts folder."""
    path = ARTIFACTS / "editor-output.png"
    with urllib.request.urlopen(view_url, timeout=30) as resp:
        path.write_bytes(resp.read())
    return path


def test_saved_workflow_runs_headless(editor: Session, server: Server, tmp_path: Path):
    info = _save_from_editor(editor, "rich graph")
    assert info["path"] == "workflows/rich graph.json"
    saved = server.home / "user" / "default" / "workflows" / "rich graph.json"
    ui = json.loads(saved.read_text())
    assert {n["type"] for n in ui["nodes"]} >= {"PrimitiveNode", "Reroute", "ImageInvert", "PreviewImage"}
    # Our conversion of the editor's saved UI format equals what the editor itself queued.
    assert strip_meta(ui_to_api(ui, Registry.load([PLUGINS]))) == strip_meta(editor.shared["rich_prompt"])
    _keep_fixture(saved, "rich_graph.ui.json")
    if os.environ.get("NODEGRAPH_UPDATE_EDITOR_FIXTURES") == "1":
        (FIXTURES / "rich_graph.prompt.json").write_text(json.dumps(editor.shared["rich_prompt"], indent=1))
    outputs = _headless_run(saved, tmp_path / "headless")
    assert [p.name for p in outputs] == ["rich_00001_.png"]
    # The editor's PNG re-runs headless too, and its chunks survive the re-run.
    rerun = _headless_run(editor.shared["png"], tmp_path / "from-png")
    assert len(rerun) == 1 and "workflow" in read_png_chunks(rerun[0])
    _keep_fixture(editor.shared["png"], "rich_graph.png")


def test_png_drop_restores_graph(editor: Session):
    page = editor.page
    page.evaluate("() => app.graph.clear()")
    assert editor.nodes() == []
    page.evaluate(DROP_FILE, [editor.shared["png_url"], "dropped.png"])
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'SlowInvert')")
    editor.shot("07-png-dropped")
    workflow = json.loads(read_png_chunks(editor.shared["png"])["workflow"])
    saved = {n["type"]: n.get("widgets_values") for n in workflow["nodes"] if n.get("widgets_values")}
    restored = dict(editor.nodes())
    assert restored["SlowInvert"] == saved["SlowInvert"]
    assert restored["SaveImage"] == saved["SaveImage"] == ["editor/rich"]


def test_invalid_graph_shows_node_error(editor: Session):
    page = editor.page
    page.evaluate("""() => { app.graph.clear();
      const save = LiteGraph.createNode("SaveImage"); save.pos = [300, 200]; app.graph.add(save); }""")
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as resp:
        page.get_by_test_id("queue-button").click()
    assert resp.value.status == 400
    body = resp.value.json()
    (node_id, report), = body["node_errors"].items()
    assert report["errors"][0]["type"] == "required_input_missing"
    page.get_by_text("Save Image is missing a required input").first.wait_for()
    assert page.evaluate("() => Object.keys(app.lastNodeErrors || {})") == [node_id]
    editor.shot("08-node-error")


def test_saved_workflow_reloads(editor: Session):
    page = editor.page
    page.evaluate("() => { localStorage.clear(); sessionStorage.clear(); }")  # nothing left but the server's copy
    editor.open()
    page.get_by_test_id("workflows-tab-button").click()
    with page.expect_response(lambda r: "rich%20graph.json" in r.url and r.request.method == "GET") as resp:
        page.get_by_text("rich graph", exact=True).first.click()
    assert resp.value.status == 200
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'SlowInvert')")
    editor.shot("09-saved-reloaded")
    saved = resp.value.json()
    assert sorted(t for t, _ in editor.nodes()) == sorted(n["type"] for n in saved["nodes"])
    assert strip_meta(editor.prompt()["output"]) == strip_meta(editor.shared["rich_prompt"])


#: Answers >= 400 a session legitimately gets: optional user files that do not exist (user.css, template and
#: workflow-folder indexes), template thumbnails the workflows folder does not ship, and the refused invalid prompt.
EXPECTED_FAILURES = ("/api/userdata/user.css", "/api/userdata/comfy.templates.json", "%2F.index.json", "/api/prompt")


def test_no_outside_requests_and_no_page_errors(editor: Session):
    assert editor.requests, "no request was recorded"
    (ARTIFACTS / "network.log").write_text("".join(f"{s} {m} {u}\n" for s, m, u in editor.responses))
    failed = [(s, m, u) for s, m, u in editor.responses if s >= 400 and not urlparse(u).path.endswith(
        EXPECTED_FAILURES) and not (urlparse(u).path.startswith("/api/workflow_templates/") and s == 404
                                    and not u.endswith(".json"))]
    assert failed == [], "the editor called routes the server does not answer"
    hosts = {urlparse(u).hostname for u in editor.requests + editor.ws_urls if not u.startswith(("blob:", "data:"))}
    assert hosts <= LOOPBACK, f"requests left the machine: {sorted(hosts - LOOPBACK)}"
    assert editor.ws_urls and all(u.startswith("ws://127.0.0.1") for u in editor.ws_urls)
    assert editor.page_errors == []
    (ARTIFACTS / "timings.json").write_text(json.dumps({k: v for k, v in editor.shared.items()
                                                        if k.endswith("seconds")}, indent=1))
