"""The official ComfyUI frontend against ``nodegraph serve``: it reads our Autogrow/DynamicCombo/MatchType
declarations from /object_info, and what it queues for a graph using them equals our own editor-format conversion
(nodes copied from official templates, tests/core/dynamic_inputs_data/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodegraph.registry import BUILTIN_PACKS
from nodegraph.testing import build_registry
from nodegraph.ui_format import ui_to_api

from .browser import CHROMIUM, READY, Server, Session, editor_page
from .helpers import strip_meta

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra has it)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", allow_module_level=True)

FIXTURE = Path(__file__).parents[1] / "core" / "dynamic_inputs_data" / "ui_batch_resize.json"
pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    """A server and a headless editor page on it."""
    server = Server(tmp_path_factory.mktemp("dyn-home"))
    try:
        server.wait_ready()
        with editor_page(server.base, "dyn-chromium-") as editor:
            editor.page.goto(server.base + "/")
            editor.page.wait_for_function(READY, timeout=60_000)
            yield editor
    finally:
        server.stop()


def test_the_editor_queues_what_we_convert(session: Session) -> None:
    ui = json.loads(FIXTURE.read_text())
    session.page.evaluate("async (wf) => { await app.loadGraphData(wf); }", ui)
    queued = session.prompt()["output"]
    ours = ui_to_api(ui, build_registry(builtins=BUILTIN_PACKS))
    assert strip_meta(queued) == strip_meta(ours)
    assert queued["105"]["inputs"]["resize_type.crop"] == "center"  # the selected option's widget, dotted


def test_a_new_node_grows_and_selects_in_the_editor(session: Session) -> None:
    """Adding the nodes from the catalogue: the editor shows the option's widgets after the combo and the
    group's first sockets, named as ComfyUI names them."""
    got = session.page.evaluate("""() => {
        const r = LiteGraph.createNode('ResizeImageMaskNode'); app.graph.add(r);
        const b = LiteGraph.createNode('BatchImagesNode'); app.graph.add(b);
        return {widgets: r.widgets.map(w => w.name), sockets: b.inputs.map(i => i.name)};
    }""")
    assert got["widgets"][:2] == ["resize_type", "resize_type.multiplier"]
    assert got["sockets"][:2] == ["images.image0", "images.image1"]
    assert not session.page_errors, session.page_errors
