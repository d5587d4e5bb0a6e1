"""nodegraph.testing as plugin authors use it: ``nodegraph_plugins`` feeds ``registry``/``engine``, plugin folders
reach worker processes, and ``nodegraph_server`` serves an engine on a real loopback port."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from server_helpers import PLUGINS, slow


def test_plugin_folders_go_to_a_copy_of_the_config(engine, registry, make_engine, nodegraph_config) -> None:
    assert "SlowSteps" in registry.nodes and "SlowSteps" in engine.registry.nodes
    assert PLUGINS in engine.config.plugin_dirs and engine.config.home == nodegraph_config.home
    assert PLUGINS not in nodegraph_config.plugin_dirs  # the fixture's own config is left as it was
    assert make_engine().config is nodegraph_config and "SlowSteps" not in make_engine().registry.nodes


def _json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_a_worker_process_server_runs_a_folder_plugin_node(engine, nodegraph_server) -> None:
    url = nodegraph_server(engine, worker_process=True)
    assert url.startswith("http://127.0.0.1:")
    prompt_id = _json(f"{url}/prompt", {"prompt": slow(steps=2, step_ms=5, tag="w", save=True)})["prompt_id"]
    deadline = time.monotonic() + 60
    while not (entry := _json(f"{url}/history/{prompt_id}").get(prompt_id)):
        assert time.monotonic() < deadline, "the prompt did not finish in 60 s"
        time.sleep(0.1)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert (engine.config.outputs_dir / "w.txt").read_text() == "w:2"
