"""``Workflow``: a saved workflow (JSON or an image carrying one, API or editor format) run with overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import jsonsafe
from .graph import Graph

if TYPE_CHECKING:
    from .result import Result
    from .sweep import SweepResult

#: ``{"3.seed": 5}`` or ``["3.seed=5"]`` (``nodegraph run --set`` syntax).
Overrides = Mapping[Any, Any] | Iterable[str] | None


def override_strings(overrides: Overrides) -> list[str]:
    """Overrides as ``ID.INPUT=VALUE`` strings for the CLI's parser (dict values written as JSON)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{override_key(key)}={jsonsafe.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return [str(item) for item in overrides]


def override_key(key: Any) -> str:
    """``"3.seed"`` as given, or from ``(node handle or id, "seed")``."""
    if isinstance(key, tuple) and len(key) == 2:
        node, name = key
        return f"{getattr(node, 'node_id', node)}.{name}"
    return str(key)


def apply_set(api: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """A copy of API JSON with ``--set`` style overrides applied; ValueError naming a bad one."""
    from ..cli import apply_overrides

    return apply_overrides(copy.deepcopy(api), override_strings(overrides))


class Workflow:
    """A workflow in API format plus what its file carried (the editor graph of a PNG), bound to an engine."""

    def __init__(self, api: Mapping[str, Any], engine: Any = None, *, extra: Mapping[str, Any] | None = None,
                 source: str | None = None) -> None:
        self.api: dict[str, Any] = copy.deepcopy(dict(api))
        self.extra: dict[str, Any] = dict(extra or {})
        self.source = source
        self._engine = engine

    @classmethod
    def load(cls, path: str | Path, engine: Any = None) -> Workflow:
        """Read a .json (API or editor format) or a PNG/WEBP that carries a workflow; editor graphs are converted
        with the engine's node catalogue."""
        from ..workflow import read_workflow_file

        loaded = read_workflow_file(Path(path))
        wf = cls({}, engine, extra=loaded.extra, source=f"{path}: {loaded.describe()}")
        wf.api = wf.engine.to_api(loaded.data)
        return wf

    @property
    def engine(self) -> Any:
        """The in-process Engine (the process default one unless given)."""
        if self._engine is None:
            from .local import default_engine
            self._engine = default_engine()
        return self._engine

    def with_set(self, overrides: Overrides) -> dict[str, Any]:
        """The API JSON with overrides applied (the workflow itself is unchanged)."""
        return apply_set(self.api, overrides)

    def to_api(self) -> dict[str, Any]:
        """A copy of the API-format JSON."""
        return copy.deepcopy(self.api)

    def graph(self, **kwargs: Any) -> Graph:
        """A Graph of this workflow (checked against the catalogue) to edit node by node."""
        return Graph.from_api(self.api, kwargs.pop("engine", self._engine), **kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the API-format JSON to ``path``."""
        path = Path(path)
        path.write_text(jsonsafe.dumps(self.api, indent=1) + "\n", encoding="utf-8")
        return path

    def extra_data(self) -> dict[str, Any]:
        """What a run stores into saved PNGs besides the prompt (the editor graph, when the file had one)."""
        return {"extra_pnginfo": {"workflow": self.extra["workflow"]}} if "workflow" in self.extra else {}

    def run(self, set: Overrides = None, **kwargs: Any) -> Result:
        """Run in-process with overrides (``{"3.seed": 5}``); nodes whose inputs did not change come from the
        cache. Options as ``Graph.run``: on_event, progress, timings, raise_on_error."""
        from .local import run_api

        kwargs.setdefault("extra_data", self.extra_data())
        return run_api(self.engine, self.with_set(set), **kwargs)

    def stream(self, set: Overrides = None, **kwargs: Any) -> Any:
        """An async iterator of the run's events (see ``Graph.stream``)."""
        from .local import EventStream

        kwargs.setdefault("extra_data", self.extra_data())
        return EventStream(self.engine, self.with_set(set), **kwargs)

    def sweep(self, axes: Mapping[str, Iterable[Any]], mode: str = "product", *, client: Any = None,
              set: Overrides = None, **kwargs: Any) -> SweepResult:
        """Run every combination (``product``) or the zipped values (``zip``) of ``{"3.seed": range(8), ...}``;
        in-process (cached nodes reused) or on ``client``'s server (in parallel). See ``nodegraph.pyapi.sweep``."""
        from .sweep import run_sweep

        return run_sweep(self, axes, mode, client=client, base=set, **kwargs)

    def __repr__(self) -> str:
        return f"Workflow({len(self.api)} nodes{', ' + self.source if self.source else ''})"
