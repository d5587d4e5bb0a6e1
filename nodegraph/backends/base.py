"""What runs prompts for the server and the CLI: the backend interface, and the in-process backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..context import InterruptFlag
from ..events import EventBus
from ..executor import RunResult
from ..validation import ValidatedPrompt

if TYPE_CHECKING:
    from ..engine import Engine


@runtime_checkable
class Backend(Protocol):
    """Runs validated prompts; events go to ``bus`` exactly as the in-process engine emits them."""

    #: How many prompts it can run at the same time (the server runs this many queue threads).
    slots: int

    def run(self, prompt: ValidatedPrompt, *, run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            bus: EventBus | None = None, interrupt: InterruptFlag | None = None) -> RunResult:
        """Execute ``prompt`` and return how it ended; never raises for node failures."""
        ...

    def free(self, unload_models: bool = True) -> None:
        """Drop cached results and models (``POST /free``)."""
        ...

    def close(self) -> None:
        """Release workers and connections; the backend is unusable afterwards."""
        ...


class LocalBackend:
    """The default: run prompts in this process through one Engine (never imports Ray)."""

    slots = 1

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    def run(self, prompt: ValidatedPrompt, *, run_id: str | None = None, extra_data: dict[str, Any] | None = None,
            bus: EventBus | None = None, interrupt: InterruptFlag | None = None) -> RunResult:
        """Run through ``Engine.run``."""
        return self.engine.run(prompt, bus=bus, interrupt=interrupt, run_id=run_id, extra_data=extra_data)

    def free(self, unload_models: bool = True) -> None:
        """``Engine.free``."""
        self.engine.free(unload_models=unload_models)

    def close(self) -> None:
        """Nothing to release."""


def create_backend(name: str, engine: "Engine", *, address: str | None = None, **options: Any) -> Backend:
    """``local`` (in this process), ``process`` (a worker process the server can end and restart; option
    ``interrupt_grace_s``) or ``ray`` (needs ``pip install nodegraph[ray]``); raises ValueError otherwise."""
    if name == "local":
        return LocalBackend(engine)
    if name == "process":
        from .process import ProcessBackend

        return ProcessBackend(engine.config, **options)
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend.for_engine(engine, address=address, **options)
    raise ValueError(f"unknown backend {name!r}; use 'process', 'local' or 'ray'")
