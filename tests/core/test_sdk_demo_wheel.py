"""plugins/nodegraph-sdk-demo as a third party ships it: built into a wheel, installed, found, and its tests pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "plugins" / "nodegraph-sdk-demo"


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 240) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's wheel, built from its folder and installed into a private target folder."""
    tmp = tmp_path_factory.mktemp("sdk-demo")
    source = tmp / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(DEMO, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(source)], cwd=tmp)
    wheels = list((tmp / "dist").glob("nodegraph_sdk_demo-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert {n.split("/")[0] for n in names} == {"nodegraph_sdk_demo", "nodegraph_sdk_demo-0.1.0.dist-info"}
    assert "nodegraph_sdk_demo/py.typed" in names
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"), str(wheels[0])],
         cwd=tmp)
    return tmp


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("NODEGRAPH_DISABLE_ENTRYPOINTS", None)
    return env


@pytest.mark.slow
def test_the_installed_wheel_is_found_through_its_entry_point(installed: Path) -> None:
    code = (
        "from nodegraph.registry import Registry\n"
        "from nodegraph.diffusion.custom import SamplerRegistry\n"
        "import nodegraph_sdk_demo\n"
        "reg = Registry.load(source_plugins=False)\n"
        "info = reg.plugins['sdk_demo']\n"
        "print(info.source, info.version, sorted(info.nodes), info.errors)\n"
        "print(sorted(SamplerRegistry.from_plugins(reg).samplers), nodegraph_sdk_demo.__file__)\n"
    )
    out = _run([sys.executable, "-c", code], cwd=installed, env=_env(installed / "site"))
    first, second = out.strip().splitlines()[-2:]
    assert first == "entrypoint 0.1.0 ['CheckpointWithVAE', 'RegionHint'] []"
    assert second.startswith("['hinted_euler'] ") and str(installed / "site") in second


@pytest.mark.slow
def test_the_plugins_own_tests_pass_against_the_installed_wheel(installed: Path) -> None:
    tests = installed / "tests"
    if not tests.exists():
        shutil.copytree(DEMO / "tests", tests)
    out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(installed),
                str(tests)], cwd=installed, env=_env(installed / "site"), timeout=280)
    summary = out.strip().splitlines()[-1]
    assert re.match(r"^5 passed\b", summary), summary  # every demo test ran (none skipped) and passed
