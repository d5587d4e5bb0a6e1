"""Paths and helpers shared by the editor tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLUGINS = HERE / "plugins"
FIXTURES = HERE / "fixtures"
ARTIFACTS = HERE / "artifacts"
WORKFLOWS = HERE.parent.parent / "workflows"


def strip_meta(api: dict[str, Any]) -> dict[str, Any]:
    """API JSON without ``_meta`` (titles differ between the editor and saved files; the graph must not)."""
    return {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in api.items()}


def load_fixture(name: str) -> Any:
    """A JSON file saved by the editor during a browser test run."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))
