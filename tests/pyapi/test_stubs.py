"""``nodegraph stubs``: a .pyi of the installed catalogue that mypy uses to check scripts (and catch wrong calls)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

GOOD = '''
from nodegraph import Graph

g = Graph()
model, clip, vae = g.CheckpointLoaderSimple(ckpt_name="nodegraph-shapes-v1")
pos = g.CLIPTextEncode(clip=clip, text="a red circle")
neg = g.CLIPTextEncode(clip=clip, text="")
latent = g.EmptyLatentImage(width=64, height=64)
sampled = g.KSampler(model=model, positive=pos, negative=neg, latent_image=latent, steps=4, sampler_name="euler")
g.SaveImage(images=g.VAEDecode(samples=sampled, vae=vae), filename_prefix="demo")
'''
BAD = '''
from nodegraph import Graph

g = Graph()
model, clip, vae = g.CheckpointLoaderSimple(ckpt_name="nodegraph-shapes-v1")
pos = g.CLIPTextEncode(clip=clip, text="a red circle")
latent = g.EmptyLatentImage(width=64, height=64)
g.KSampler(model=clip, positive=pos, negative=pos, latent_image=latent, sampler_name="eulr")
g.KSamplr()
'''


def test_generated_stubs_type_check_a_script_and_catch_wrong_calls(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "nodegraph.cli", "stubs", "--home", str(home), "-o",
                          str(tmp_path / "typings")], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    stub = Path(out.stdout.strip())
    assert stub == tmp_path / "typings" / "nodegraph_catalogue.pyi"
    text = stub.read_text()
    assert "def KSampler(self, *, model: MODEL," in text and "Literal['nodegraph-shapes-v1']" in text
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(f"[mypy]\nmypy_path = {tmp_path / 'typings'}:{ROOT}\nfollow_imports = silent\n"
                   "ignore_missing_imports = True\nwarn_unused_ignores = False\n"
                   "[mypy-torch.*,diffusers.*,transformers.*,accelerate.*,safetensors.*,aiohttp.*,ray.*]\n"
                   "follow_imports = skip\n")
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)

    def mypy(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg), "--cache-dir",
                               str(tmp_path / "cache"), str(tmp_path / name)], check=False,
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    good = mypy("good.py")
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy("bad.py")
    assert bad.returncode == 1, bad.stdout
    assert ('Argument "model" to "KSampler" of "NodeMethods" has incompatible type "CLIP"; expected "MODEL"'
            in bad.stdout)
    assert "Literal['eulr']" in bad.stdout
    assert '"Graph" has no attribute "KSamplr"' in bad.stdout
