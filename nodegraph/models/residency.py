"""Which modules live on the accelerator between uses, within a VRAM budget.

``Residency.use(*modules)`` moves modules to the device (and compute dtype) for a block; they stay there afterwards
(resident), so the next run skips the copy, until room is needed: then the least recently used modules that are not
in use go back to the host. A module too large for what is left even then is loaded partly: its small layers go to
the device and its largest layers (Linear, Conv, Embedding) stay on the host and are streamed to the device only for
their own forward call. Modules are tracked by weak reference: dropping a model (the ModelManager evicting it) frees
its device memory without telling this class.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections import OrderedDict
from typing import Any, Iterator

log = logging.getLogger(__name__)


def module_bytes(module: Any, recurse: bool = True, dtype: Any = None) -> int:
    """Bytes of a module's parameters and buffers (as they are, or with floating ones cast to ``dtype``)."""
    size = None if dtype is None else dtype.itemsize
    return sum(int((size if size and t.is_floating_point() else t.element_size()) * t.numel())
               for t in (*module.parameters(recurse=recurse), *module.buffers(recurse=recurse)))


def _streamable(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding))


def _on(module: Any, device: Any, dtype: Any) -> bool:
    first = next(module.parameters(), None)
    if first is None:
        return True
    return first.device == device and (dtype is None or first.dtype == dtype)


def keeps_dtype(module: Any) -> bool:
    """Whether ``module`` computes in its own dtype rather than the device's: bfloat16 models (Flux and the other
    transformers are trained and run in it) and float8 storage (upcast layer by layer) are never cast to float16."""
    first = next((t for t in module.parameters() if t.is_floating_point()), None)
    return first is not None and (str(first.dtype) == "torch.bfloat16" or "float8" in str(first.dtype))


class Residency:
    """Modules resident on ``device`` in ``dtype``, at most ``budget`` bytes (None: no limit), LRU out first.

    ``home``/``home_dtype`` are where offloaded modules go (the CPU; None keeps their dtype). On CUDA the device's
    real free memory is checked too, so memory other processes hold is respected.
    """

    def __init__(self, device: Any, dtype: Any, budget: int | None = None, home: Any = "cpu",
                 home_dtype: Any = None) -> None:
        import torch

        self.device = torch.device(device)
        self.dtype = dtype
        self.budget = budget
        self.home = torch.device(home)
        self.home_dtype = home_dtype
        self._resident: OrderedDict[int, tuple[weakref.ref, int]] = OrderedDict()
        self.offloads = 0
        self.streamed = 0

    @property
    def tracking(self) -> bool:
        """Whether residency is tracked (an accelerator, or a budget on another device)."""
        return self.device != self.home or self.budget is not None

    def resident(self) -> list[Any]:
        """The live resident modules, least recently used first."""
        self._prune()
        return [ref() for ref, _ in self._resident.values()]

    @property
    def nbytes(self) -> int:
        """Bytes of the live resident modules."""
        self._prune()
        return sum(n for _, n in self._resident.values())

    def _prune(self) -> None:
        for key in [k for k, (ref, _) in self._resident.items() if ref() is None]:
            del self._resident[key]

    def _room(self) -> int | None:
        """Bytes that may still be placed on the device (None: unlimited)."""
        room = None if self.budget is None else self.budget - self.nbytes
        if self.device.type == "cuda":
            from .memory import device_memory

            mem = device_memory(self.device)
            if mem is not None:
                free = int(mem[0] * 0.9)
                room = free if room is None else min(room, free)
        return room

    def _offload(self, module: Any) -> None:
        module.to(self.home, self.home_dtype) if self.home_dtype is not None else module.to(self.home)
        self.offloads += 1

    def _make_room(self, needed: int, keep: set[int]) -> None:
        room = self._room()
        while room is not None and room < needed:
            victim = next((k for k in self._resident if k not in keep), None)
            if victim is None:
                return
            ref, _ = self._resident.pop(victim)
            module = ref()
            if module is not None:
                self._offload(module)
                self._empty_cache()
            room = self._room()

    def _empty_cache(self) -> None:
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    @contextlib.contextmanager
    def use(self, *modules: Any) -> Iterator[None]:
        """Put ``modules`` on the device for the block (partly, when they do not fit); they stay resident after."""
        mods = list({id(m): m for m in modules if m is not None}.values())
        keep = {id(m) for m in mods}
        hooks: list[Any] = []
        partial: list[Any] = []
        try:
            for m in mods:
                dtype = None if keeps_dtype(m) else self.dtype
                if id(m) in self._resident and _on(m, self.device, dtype):
                    self._resident.move_to_end(id(m))
                    continue
                need = module_bytes(m, dtype=dtype)
                if self.tracking:
                    self._make_room(need, keep)
                room = self._room() if self.tracking else None
                if room is None or need <= room:
                    if not _on(m, self.device, dtype):
                        m.to(self.device, dtype) if dtype is not None else m.to(self.device)
                    if self.tracking:
                        self._resident[id(m)] = (weakref.ref(m), need)
                else:
                    hooks += self._load_partly(m, max(room, 0), dtype)
                    partial.append(m)
            yield
        finally:
            for h in hooks:
                h.remove()
            for m in partial:  # a partly loaded module never stays: the next use may have more room
                self._offload(m)
            if partial:
                self._empty_cache()

    def _load_partly(self, module: Any, room: int, dtype: Any = None) -> list[Any]:
        """Small layers onto the device within ``room``; the largest streamable ones are moved per forward call."""
        layers = [(module_bytes(m, recurse=False, dtype=dtype), m) for m in module.modules()
                  if next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None)
                  is not None]
        layers.sort(key=lambda item: item[0])
        placed, hooks, streamed = 0, [], 0
        for size, layer in layers:
            if placed + size <= room or not _streamable(layer):
                layer.to(self.device, dtype) if dtype is not None else layer.to(self.device)
                placed += size
            else:
                hooks.append(layer.register_forward_pre_hook(functools.partial(self._to_device, dtype=dtype)))
                hooks.append(layer.register_forward_hook(self._to_home))
                streamed += 1
        self.streamed += streamed
        log.info("loaded %s partly: %.1f MB resident, %d largest layers streamed from the host",
                 type(module).__name__, placed / 1e6, streamed)
        return hooks

    def _to_device(self, layer: Any, _args: Any, dtype: Any = None) -> None:
        layer.to(self.device, dtype) if dtype is not None else layer.to(self.device)

    def _to_home(self, layer: Any, _args: Any, _out: Any) -> None:
        self._offload(layer)
        self.offloads -= 1  # streaming is not an eviction

    def release(self) -> None:
        """Move every resident module to the host and empty the accelerator cache."""
        for ref, _ in list(self._resident.values()):
            module = ref()
            if module is not None:
                self._offload(module)
        self._resident.clear()
        self._empty_cache()


__all__ = ["Residency", "keeps_dtype", "module_bytes"]
