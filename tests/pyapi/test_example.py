"""The notebook-style example runs end to end on the embedded model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT
from PIL import Image

pytestmark = pytest.mark.slow


def test_the_example_script_runs(tmp_path) -> None:
    env = {**os.environ, "NODEGRAPH_HOME": str(tmp_path / "home")}
    env.pop("NODEGRAPH_URL", None)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "caught: KSampler.model" in out.stdout and "expects MODEL but got CLIP" in out.stdout
    assert "executed: ['5', '6', '7']" in out.stdout  # a new seed: the sampler and below
    assert "stream ended: interrupted" in out.stdout
    with Image.open(tmp_path / "python_api_sweep.png") as sheet:
        assert sheet.width >= 128 and sheet.height >= 128
    assert (tmp_path / "python_api_graph.json").is_file()
