"""The editor plays a saved video: a tiny CreateVideo → SaveVideo graph run from the official ComfyUI frontend in
Debian's headless Chromium (Playwright) against a real ``nodegraph serve``; SaveVideo's node shows a <video> whose
source is /api/view, fetched with byte ranges (206), that reaches HAVE_CURRENT_DATA and whose time advances. A video
file opened in the editor is uploaded through /upload/image and previewed in the LoadVideo node it makes."""

from __future__ import annotations

from pathlib import Path

import pytest

from .browser import CHROMIUM, Server, Session, editor_page

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra has it)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: 16 frames at 8 fps (two seconds) of a changing colour: no model, so the run takes a moment.
GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 8, "color": 0x3366CC}},
         "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 8, "color": 0xCC6633}},
         "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
         "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}},
         "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "video/editor",
                                                     "format": "auto", "codec": "auto"}}}
VIDEO_STATE = ("() => [...document.querySelectorAll('video')].map(v => ({src: v.src, ready: v.readyState, "
               "time: v.currentTime, paused: v.paused, width: v.videoWidth, height: v.videoHeight}))")


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("editor-video-home"))
    try:
        server.wait_ready()
        with editor_page(server.base, "editor-video-chromium-") as session:
            yield session
    finally:
        server.stop()


def test_save_video_output_plays_in_the_editor(editor: Session) -> None:
    editor.open()
    page = editor.page
    page.evaluate("async (api) => { await app.loadApiJson(api, 'video.json'); }", GRAPH)
    assert [t for t, _ in editor.nodes()].count("SaveVideo") == 1
    _, messages = editor.run()
    executed = [m["data"]["output"] for m in messages if m["type"] == "executed"]
    assert executed == [{"images": [{"filename": "editor_00001_.mp4", "subfolder": "video", "type": "output"}],
                         "animated": [True]}]
    page.get_by_role("button", name="Fit View (.)").click()
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2)",
                           timeout=30_000)
    (video,) = page.evaluate(VIDEO_STATE)
    assert "/api/view?filename=editor_00001_.mp4&subfolder=video&type=output" in video["src"]
    assert (video["width"], video["height"]) == (64, 48)
    start = video["time"]
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function(f"() => document.querySelector('video').currentTime > {start} + 0.25", timeout=15_000)
    editor.shot("video-playing")
    media = [(status, url) for status, method, url in editor.responses if "editor_00001_.mp4" in url]
    assert any(status == 206 for status, _ in media), media  # Chromium streams media with Range requests
    assert editor.page_errors == []


def test_an_opened_video_is_uploaded_and_previewed_by_load_video(editor: Session, tmp_path: Path) -> None:
    import torch

    from nodegraph.media import encode_video

    clip = tmp_path / "my clip.mp4"
    encode_video(clip, torch.rand(8, 48, 64, 3), 8)
    page = editor.page
    page.evaluate("() => { app.graph.clear(); }")
    with page.expect_response(lambda r: r.url.endswith("/upload/image") and r.request.method == "POST") as resp:
        page.locator("#comfy-file-input").set_input_files(str(clip))  # the editor's "open file" input
    assert resp.value.status == 200 and resp.value.json() == {"name": "my clip.mp4", "subfolder": "",
                                                              "type": "input"}
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'LoadVideo' && "
                           "n.widgets?.find(w => w.name === 'file')?.value === 'my clip.mp4')")
    page.get_by_role("button", name="Fit View (.)").click()
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 2 && "
                           "v.src.includes('type=input') && v.src.includes('my+clip.mp4'))", timeout=30_000)
    editor.shot("video-uploaded")
    assert editor.page_errors == []
