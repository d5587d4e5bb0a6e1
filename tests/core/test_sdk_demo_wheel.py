"""plugins/nodegraph-sdk-demo as a third party ships it: built into a wheel, installed, found, and its tests pass."""

from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from nodegraph.testing import build_wheel, run_checked

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "plugins" / "nodegraph-sdk-demo"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's wheel, built from its folder and installed into a private target folder."""
    tmp = tmp_path_factory.mktemp("sdk-demo")
    wheel = build_wheel(DEMO, tmp)  # from a copy: building writes build/ and *.egg-info beside the sources
    assert wheel.name.startswith("nodegraph_sdk_demo-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"nodegraph_sdk_demo", "nodegraph_sdk_demo-0.1.0.dist-info"}
    assert "nodegraph_sdk_demo/py.typed" in names
    run_checked([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"), str(wheel)],
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
    out = run_checked([sys.executable, "-c", code], cwd=installed, env=_env(installed / "site"))
    first, second = out.strip().splitlines()[-2:]
    assert first == "entrypoint 0.1.0 ['CheckpointWithVAE', 'RegionHint'] []"
    assert second.startswith("['hinted_euler'] ") and str(installed / "site") in second


@pytest.mark.slow
def test_the_plugins_own_tests_pass_against_the_installed_wheel(installed: Path) -> None:
    tests = installed / "tests"
    if not tests.exists():
        shutil.copytree(DEMO / "tests", tests)
    out = run_checked([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(installed),
                str(tests)], cwd=installed, env=_env(installed / "site"), timeout=280)
    summary = out.strip().splitlines()[-1]
    assert re.match(r"^5 passed\b", summary), summary  # every demo test ran (none skipped) and passed
