"""Helpers of the browser test: a real ``nodegraph serve`` subprocess and one headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .helpers import ARTIFACTS, PLUGINS

CHROMIUM = "/usr/bin/chromium"
#: Without these, Chromium keeps trying outside hosts (component updates, field trials, sync).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
READY = "() => window.app && window.app.graph && !document.getElementById('splash-loader')"

#: Drop a file fetched from the server onto the canvas, as a user dragging an image from the desktop.
DROP_FILE = """async ([url, name]) => {
  const blob = await (await fetch(url)).blob();
  const dt = new DataTransfer();
  dt.items.add(new File([blob], name, {type: blob.type}));
  const target = document.querySelector('#graph-canvas') || document.body;
  for (const kind of ['dragenter', 'dragover', 'drop'])
    target.dispatchEvent(new DragEvent(kind, {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""

#: Record every title the page shows (the editor puts "[N%]" in it while a prompt runs).
WATCH_TITLE = """() => { window.__titles = [];
  new MutationObserver(() => window.__titles.push(document.title))
    .observe(document.querySelector('title'), {childList: true, subtree: true, characterData: true}); }"""

#: Build, with the editor's own node classes, a graph using everything the UI→API conversion must handle:
#: a PrimitiveNode feeding a converted widget, a Reroute, a bypassed node, a muted branch and a seed widget.
BUILD_RICH_GRAPH = """() => {
  const g = app.graph;
  g.clear();
  const add = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; g.add(n); return n; };
  const slot = (n, name) => n.inputs.findIndex(i => i.name === name);
  const widget = (n, name) => n.widgets.find(w => w.name === name);
  const empty = add("EmptyImage", [80, 120]);
  widget(empty, "color").value = 0x3366cc;
  const prim = add("PrimitiveNode", [80, 420]);
  prim.connect(0, empty, slot(empty, "width"));
  prim.widgets[0].value = 24;
  const reroute = add("Reroute", [430, 140]);
  empty.connect(0, reroute, 0);
  const bypassed = add("ImageInvert", [560, 120]);
  reroute.connect(0, bypassed, 0);
  bypassed.mode = 4;
  const slow = add("SlowInvert", [840, 120]);
  bypassed.connect(0, slow, 0);
  widget(slow, "seed").value = 1234;
  slow.widgets[slow.widgets.indexOf(widget(slow, "seed")) + 1].value = "fixed";
  widget(slow, "steps").value = 6;
  widget(slow, "step_ms").value = 250;
  const save = add("SaveImage", [1180, 120]);
  slow.connect(0, save, 0);
  widget(save, "filename_prefix").value = "editor/rich";
  const muted = add("PreviewImage", [840, 480]);
  empty.connect(0, muted, 0);
  muted.mode = 2;
  widget(empty, "height").value = 96;
  app.canvas.ds.scale = 0.9;
  app.canvas.ds.offset = [0, 0];
  g.setDirtyCanvas(true, true);
}"""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``nodegraph serve`` on a loopback port with a temporary home and the editor test plugin."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = ARTIFACTS / "server.log"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodegraph.cli", "serve", "--home", str(home), "--port", str(self.port),
             "--plugin-dir", str(PLUGINS)], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the server answers; raise with its log when it died or took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.base + "/api/system_stats", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then kill) and close its log."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@dataclass
class Session:
    """The page plus everything recorded while the tests drive it."""

    page: Any
    base: str
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[int, str, str]] = field(default_factory=list)
    ws_urls: list[str] = field(default_factory=list)
    ws_frames: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)

    def attach(self) -> None:
        """Record requests, WebSocket frames and uncaught page errors."""
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("response", lambda r: self.responses.append((r.status, r.request.method, r.url)))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))

        def on_ws(ws: Any) -> None:
            self.ws_urls.append(ws.url)
            ws.on("framereceived", lambda payload: self.ws_frames.append(payload) if isinstance(payload, str)
                  else None)
        self.page.on("websocket", on_ws)

    def open(self, path: str = "/") -> float:
        """Load the editor and wait until its graph is ready; returns the seconds it took."""
        start = time.monotonic()
        self.page.goto(self.base + path)
        self.page.wait_for_function(READY, timeout=60_000)
        self.page.wait_for_function("() => app.graph._nodes.length > 0 || window.__allowEmpty", timeout=30_000)
        self.page.evaluate(WATCH_TITLE)
        return time.monotonic() - start

    def shot(self, name: str) -> None:
        """Save a screenshot as a test artifact."""
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def nodes(self) -> list[tuple[str, list[Any]]]:
        """(type, widget values) of every node on the canvas, by id."""
        return self.page.evaluate("() => [...app.graph._nodes].sort((a, b) => a.id - b.id)"
                                  ".map(n => [n.type, (n.widgets || []).map(w => w.value)])")

    def prompt(self) -> dict[str, Any]:
        """What the editor itself would queue: ``{workflow, output}`` from ``app.graphToPrompt()``."""
        return self.page.evaluate("async () => { const p = await app.graphToPrompt();"
                                  " return {workflow: p.workflow, output: p.output}; }")

    def run(self, timeout_s: float = 120.0) -> tuple[str, list[dict[str, Any]]]:
        """Click Run and wait for the prompt's outcome; returns (prompt id, its WebSocket messages).

        Fails at once with the server's message when the prompt fails, instead of waiting for an image.
        """
        first = len(self.ws_frames)
        with self.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as post:
            self.page.get_by_test_id("queue-button").click()
        assert post.value.status == 200, post.value.text()
        prompt_id = post.value.json()["prompt_id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            messages = [m for m in map(json.loads, self.ws_frames[first:])
                        if isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == prompt_id]
            for m in messages:
                if m["type"] in ("execution_error", "execution_interrupted"):
                    raise AssertionError(f"the prompt failed in node {m['data'].get('node_id')} "
                                         f"({m['data'].get('node_type')}): {m['data'].get('exception_message')}")
                if m["type"] == "execution_success":
                    return prompt_id, messages
            self.page.wait_for_timeout(100)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout_s} s")

    def shown_image(self, node_type: str = "SaveImage") -> str:
        """Wait until the node shows an image; returns the /api/view URL the editor loaded it from.

        The editor only loads a node's images when the node is drawn, so the view is fitted to the graph first.
        """
        self.page.get_by_role("button", name="Fit View (.)").click()
        self.page.wait_for_function(f"() => app.graph._nodes.find(n => n.type === '{node_type}')?.imgs?.length > 0")
        return self.page.evaluate(f"() => app.graph._nodes.find(n => n.type === '{node_type}').imgs[0].src")


@contextlib.contextmanager
def editor_page(base: str, prefix: str) -> Iterator[Session]:
    """A headless Chromium page (1400×900, 30 s default timeout) recording as a Session on the server at ``base``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix=prefix), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        session = Session(context.pages[0] if context.pages else context.new_page(), base)
        session.attach()
        try:
            yield session
        finally:
            context.close()
