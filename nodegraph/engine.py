"""The engine facade: one object bundling registry, validator, cache and executor for a process (no globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .cache import OutputCache
from .config import EngineConfig
from .context import InterruptFlag, Services
from .diffusion.custom import install_samplers
from .events import EventBus
from .executor import Executor, RunResult
from .provenance import HashCache, build_manifest, stamp_versions
from .registry import Registry
from .validation import (
    ValidatedPrompt,
    ValidationCancelled,
    Validator,
    node_count_error,
)
from .workflow import is_ui_format, parse_workflow, read_workflow_file


class Engine:
    """Loads plugins once, then validates and runs any number of workflows with a shared cache."""

    def __init__(self, config: EngineConfig | None = None, registry: Registry | None = None,
                 cache: OutputCache | None = None, services: Services | None = None) -> None:
        self.config = config or EngineConfig()
        self.registry = registry or Registry.from_config(self.config)
        install_samplers(self.config, self.registry)  # plugin samplers/schedules: per engine, no torch import
        self.validator = Validator(self.registry, self.config)
        self.services = services or Services()
        self.services.put(EngineConfig, self.config)
        self.services.put(Registry, self.registry)  # node expansion looks classes up in this engine's registry
        self.executor = Executor(self.config, cache, self.services)

    @property
    def cache(self) -> OutputCache:
        """The shared output cache."""
        return self.executor.cache

    def to_api(self, data: Any) -> dict[str, Any]:
        """Return API-format JSON, converting the editor's UI format with the node catalogue when needed."""
        if is_ui_format(data):
            from .ui_format import ui_to_api
            data = ui_to_api(data, self.registry)
        from .blueprints import expand  # ``subgraph/NAME`` nodes: saved blueprints used as nodes
        return expand(data, self.config, self.registry, self.validator.limits)

    def prepare(self, data: Any, targets: Iterable[str] | None = None,
                should_stop: Callable[[], bool] | None = None) -> ValidatedPrompt:
        """Parse and validate workflow JSON (API or UI format); raises WorkflowFormatError / ValidationReport.

        The node count is checked against ``config.limits.max_nodes`` before any parsing; ``should_stop`` lets a
        caller abandon validation (ValidationCancelled). The prompt's ``raw`` JSON (stored in PNGs and history)
        records each node's version in ``_meta.version``.
        """
        if should_stop is not None and should_stop():
            raise ValidationCancelled("validation not started: the client went away")
        if isinstance(data, dict):
            nodes = data.get("nodes") if is_ui_format(data) else data
            too_many = node_count_error(len(nodes), self.validator.limits)
            if too_many is not None:
                raise too_many
        prompt = self.validator.validate(parse_workflow(self.to_api(data)), targets, should_stop)
        prompt.raw = stamp_versions(prompt.raw, prompt)
        return prompt

    @property
    def hashes(self) -> HashCache:
        """The model-file hash cache (SHA-256 remembered by path, size and mtime)."""
        return self.services.get(HashCache, lambda: HashCache(self.config.user_dir / "hashes.db"))

    def load_file(self, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read a workflow file (.json in API or editor format, or a PNG/WEBP that carries one; see
        ``read_workflow_file``): (API-format JSON, the image's other entries such as ``workflow``)."""
        loaded = read_workflow_file(path)
        return self.to_api(loaded.data), loaded.extra

    def run(self, prompt: ValidatedPrompt, *, bus: EventBus | None = None, interrupt: InterruptFlag | None = None,
            run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            record_events: bool = False) -> RunResult:
        """Execute a validated prompt (see Executor.run); outputs carry a provenance manifest."""
        return self.executor.run(prompt, bus=bus, interrupt=interrupt, run_id=run_id, extra_data=extra_data,
                                 record_events=record_events,
                                 manifest=lambda: build_manifest(prompt, self.config, self.hashes, self.services))

    def free(self, unload_models: bool = True) -> None:
        """Drop cached results and release accelerator memory; with ``unload_models`` also unload every model."""
        from .models.manager import ModelManager

        if unload_models:
            self.cache.clear()
        for service in self.services.values():
            if not unload_models and isinstance(service, ModelManager):
                continue
            release = getattr(service, "release", None)
            if callable(release):
                release()
