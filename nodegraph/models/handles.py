"""Light handles to models held by the ModelManager: what loader nodes return and the output cache stores.

A handle names a loaded model (its manager key, kind, name and size) and knows how to load it again; it holds no
weights, so caching it costs a few hundred bytes and evicting the model from the manager really frees memory. A
node gets the model with ``handle.get()`` or, pinned for the duration, ``with manager.use(handle) as (model,):``.

Handles are immutable. A node that changes a model (a LoRA, the CLIP stop layer) returns a derived handle that
records the change; ``get()`` applies it to the loaded value with ``dataclasses.replace`` (weights shared)::

    clip = derive(clip, stop_at_layer=-2)           # a handle or a plain TextEncoder alike
    model = model.with_lora(patch)                  # both handles and DiffusionModels have with_lora
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Hashable

if TYPE_CHECKING:
    from .manager import ModelManager


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded (or reloadable) model: ``key`` in the manager, its ``kind`` and ``name``, ``size`` in bytes.

    ``part`` picks one attribute of the loaded value (a checkpoint's ``model``, ``clip`` or ``vae``); ``changes``
    are field overrides applied to it on ``get()``.
    """

    key: Hashable
    kind: str
    name: str
    size: int
    load: Callable[[], Any] = field(repr=False)
    manager: "ModelManager" = field(repr=False)
    part: str | None = None
    changes: tuple[tuple[str, Any], ...] = ()

    #: What caching a handle costs (the cache's ``estimate_size`` reads ``nbytes``): the weights live elsewhere.
    nbytes: ClassVar[int] = 512

    def get(self) -> Any:
        """The model (reloaded when it was evicted), with this handle's part and changes applied."""
        return self.manager.get(self)

    def apply(self, loaded: Any) -> Any:
        """This handle's part of ``loaded`` with its changes applied."""
        value = getattr(loaded, self.part) if self.part else loaded
        if self.changes:
            value = dataclasses.replace(value, **dict(self.changes))
        return value

    def derive(self, **changes: Any) -> "ModelHandle":
        """A handle to the same weights with more field overrides (later ones win)."""
        merged = dict(self.changes)
        merged.update(changes)
        return dataclasses.replace(self, changes=tuple(merged.items()))

    @property
    def loras(self) -> tuple[Any, ...]:
        """The LoRA patches recorded on this handle."""
        return tuple(dict(self.changes).get("loras", ()))

    def with_lora(self, patch: Any) -> "ModelHandle":
        """A handle with one more LoRA (as ``DiffusionModel.with_lora``)."""
        return self.derive(loras=self.loras + (patch,))

    def __getattr__(self, name: str) -> Any:
        """Other attributes read through to the model (``model.unet``, ``clip.encoders``), loading it if evicted.

        Code written for the plain values keeps working; nodes that hold a model for long use ``manager.use``.
        """
        if name.startswith("__") or name in _FIELDS:
            raise AttributeError(name)
        return getattr(self.get(), name)

    def __reduce__(self) -> Any:
        raise TypeError(f"a model handle ({self.kind} {self.name!r}) belongs to one process's ModelManager and "
                        "cannot be pickled; ship the model file's name and load it where it is used")


_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelHandle))


def is_handle(value: Any) -> bool:
    """Whether ``value`` is a ModelHandle."""
    return isinstance(value, ModelHandle)


def resolve(value: Any) -> Any:
    """The model behind a handle; any other value unchanged (plugins may pass models directly)."""
    return value.get() if isinstance(value, ModelHandle) else value


def derive(value: Any, **changes: Any) -> Any:
    """A handle or a dataclass value (DiffusionModel, TextEncoder, …) with fields changed, weights shared."""
    if isinstance(value, ModelHandle):
        return value.derive(**changes)
    return dataclasses.replace(value, **changes)


__all__ = ["ModelHandle", "is_handle", "resolve", "derive"]
