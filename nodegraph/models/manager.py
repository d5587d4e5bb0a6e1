"""The ModelManager: the one owner of loaded models, within a RAM budget, least recently used out first.

Models are keyed by what they were loaded from (kind, the file's fingerprint: path, size and mtime; dtype and device),
so the same file loaded by two nodes or two runs is loaded once, and a file changed on disk loads afresh. Loaders get a
light ``ModelHandle`` back; the output cache stores handles, never weights. When the models' total size would pass
the RAM budget, the least recently used ones that no node is using (``use`` pins them) are dropped: the manager
holds the only reference, so their memory is returned (garbage collected, accelerator cache emptied). A handle to an
evicted model loads it again on ``get()``.

Accelerator memory (VRAM) belongs to the same manager through its DeviceManager (``manager.devices``): modules stay
on the device between uses within the VRAM budget, and are moved off, or only partly loaded, when it runs short.

Usage in a node::

    model, clip, vae = manager.load_checkpoint(path, config, name=ckpt_name)   # three handles
    with manager.use(model) as (unet_model,):   # loaded (again if evicted) and pinned for the block
        ...
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, NamedTuple

from .handles import ModelHandle, is_handle
from .memory import Budgets, release_memory

log = logging.getLogger(__name__)


@dataclass
class ModelStats:
    """Counters for observing the manager: first loads, reloads after eviction, hits and evictions."""

    loads: int = 0
    reloads: int = 0
    hits: int = 0
    evictions: int = 0
    peak_bytes: int = 0


@dataclass
class _Entry:
    value: Any
    nbytes: int
    kind: str
    name: str


class CheckpointHandles(NamedTuple):
    """The MODEL, CLIP and VAE handles of one loaded checkpoint (one manager entry)."""

    model: ModelHandle
    clip: ModelHandle
    vae: ModelHandle


def fingerprint(path: Path) -> tuple[Any, ...]:
    """(path, size, mtime) of a file, or of every file in a folder: changes when the model on disk changes."""
    from nodegraph.diffusion.loading import file_fingerprint

    return file_fingerprint(Path(path))


def _disk_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    return 0


class ModelManager:
    """Loaded models by key, within ``budgets.ram`` bytes; one per engine (a service), thread-safe."""

    def __init__(self, budgets: Budgets | None = None, devices: Any = None) -> None:
        from .memory import default_ram_budget

        self.budgets = budgets or Budgets(default_ram_budget())
        self._devices = devices
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._pins: Counter[Hashable] = Counter()
        self._seen: set[Hashable] = set()
        self._bytes = 0
        self._lock = threading.RLock()
        self.stats = ModelStats()

    @classmethod
    def from_config(cls, config: Any, devices: Any = None) -> "ModelManager":
        """Budgets from ``config`` (``model_ram_budget``/``model_vram_budget``) or the machine; devices from config."""
        if devices is None:
            from nodegraph.diffusion.devices import DeviceManager

            devices = DeviceManager.from_config(config)
        return cls(Budgets.from_config(config, devices.device), devices)

    @property
    def devices(self) -> Any:
        """The DeviceManager: device and dtype policy, and the modules resident on the accelerator."""
        if self._devices is None:
            from nodegraph.diffusion.devices import DeviceManager

            self._devices = DeviceManager(vram_budget=self.budgets.vram)
        return self._devices

    # ---- inspection ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes of the models held (as measured after loading)."""
        return self._bytes

    def loaded(self) -> list[tuple[str, str, int]]:
        """(kind, name, bytes) of every model held, least recently used first."""
        with self._lock:
            return [(e.kind, e.name, e.nbytes) for e in self._entries.values()]

    # ---- loading ---------------------------------------------------------------------------------------------------

    def handle(self, kind: str, path: Path | None, load: Callable[[], Any], *, name: str | None = None,
               key: Hashable = None, dtype: Any = None, device: Any = None, part: str | None = None,
               size: int = 0) -> ModelHandle:
        """A handle for the model ``load()`` returns, keyed by ``kind``, the file's fingerprint, dtype and device.

        Nothing is loaded yet; ``key`` replaces the fingerprint for models that are not files.
        """
        if key is None:
            if path is None:
                raise ValueError("give the model's path or an explicit key")
            key = (kind, fingerprint(path), str(dtype), str(device))
        if not size and path is not None:
            size = _disk_bytes(path)
        return ModelHandle(key=key, kind=kind, name=name or (Path(path).name if path else kind), size=size,
                           load=load, manager=self, part=part)

    def load(self, kind: str, path: Path | None, load: Callable[[], Any], **kw: Any) -> ModelHandle:
        """``handle(...)`` and load it now (so a broken file fails in the loader node), returning the handle."""
        handle = self.handle(kind, path, load, **kw)
        self.get(handle)
        entry = self._entries.get(handle.key)
        return handle if entry is None else _sized(handle, entry.nbytes)

    def get(self, handle: ModelHandle) -> Any:
        """The model of ``handle`` (its part, with its changes), loading it when absent."""
        return handle.apply(self._value(handle))

    def _value(self, handle: ModelHandle) -> Any:
        with self._lock:
            entry = self._entries.get(handle.key)
            if entry is not None:
                self._entries.move_to_end(handle.key)
                self.stats.hits += 1
                return entry.value
            self._make_room(handle.size, keep={handle.key})
            value = handle.load()
            nbytes = _measure(value)
            self._entries[handle.key] = _Entry(value, nbytes, handle.kind, handle.name)
            self._bytes += nbytes
            if handle.key in self._seen:
                self.stats.reloads += 1
                log.info("reloaded %s %s (%.1f MB) after it was evicted", handle.kind, handle.name, nbytes / 1e6)
            else:
                self.stats.loads += 1
                self._seen.add(handle.key)
            self.stats.peak_bytes = max(self.stats.peak_bytes, self._bytes)
            self._make_room(0, keep={handle.key})
            return value

    def resolve(self, value: Any) -> Any:
        """The model behind a handle; any other value unchanged."""
        return self.get(value) if is_handle(value) else value

    @contextlib.contextmanager
    def use(self, *values: Any) -> Iterator[tuple[Any, ...]]:
        """Resolve handles (others pass through) and keep their models from eviction for the block."""
        keys = [v.key for v in values if is_handle(v)]
        with self._lock:
            self._pins.update(keys)
        try:
            yield tuple(self.resolve(v) for v in values)
        finally:
            with self._lock:
                self._pins.subtract(keys)
                self._pins += Counter()  # drop counts that reached zero
                self._make_room(0)

    # ---- convenience loaders for the built-in model kinds ----------------------------------------------------------

    def load_checkpoint(self, path: Path, config: Any = None, *, name: str | None = None) -> CheckpointHandles:
        """MODEL, CLIP and VAE handles of a checkpoint (loaded in the accelerator's dtype when there is one)."""
        from nodegraph.diffusion.loading import load_checkpoint

        dtype = self.devices.dtype if self.devices.device.type != "cpu" else None
        handle = self.load("checkpoint", path, lambda: load_checkpoint(Path(path), config, name=name, dtype=dtype),
                           name=name, dtype=dtype)
        return CheckpointHandles(*(_part(handle, p) for p in ("model", "clip", "vae")))

    def load_vae(self, path: Path, config: Any = None, *, name: str | None = None) -> ModelHandle:
        """A VAE handle (VAEs load in float32)."""
        from nodegraph.diffusion.loading import load_vae

        return self.load("vae", path, lambda: load_vae(Path(path), config, name=name), name=name)

    def load_lora(self, path: Path, allow_pickle: bool = False) -> Any:
        """The parsed LoRA file (LoraWeights), held within the same budget."""
        from nodegraph.diffusion.lora import load_lora

        return self.load("lora", path, lambda: load_lora(path, allow_pickle), name=Path(path).name).get()

    # ---- freeing ---------------------------------------------------------------------------------------------------

    def _make_room(self, needed: int, keep: frozenset[Hashable] | set[Hashable] = frozenset()) -> None:
        """Evict unpinned models, least recently used first, until ``needed`` more bytes fit the RAM budget."""
        freed = False
        while self._bytes + needed > self.budgets.ram:
            victim = next((k for k in self._entries if k not in keep and not self._pins.get(k)), None)
            if victim is None:
                if needed or self._bytes > self.budgets.ram:
                    log.debug("models hold %d bytes, over the %d byte budget, but all are in use",
                              self._bytes, self.budgets.ram)
                break
            self._drop(victim)
            freed = True
        if freed:
            release_memory(self._device())

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.nbytes
        self.stats.evictions += 1
        log.info("evicted %s %s (%.1f MB) to stay within the %.1f GB model budget", entry.kind, entry.name,
                 entry.nbytes / 1e6, self.budgets.ram / 1e9)

    def evict(self, key: Hashable) -> bool:
        """Drop one model now unless it is in use; whether it was dropped."""
        with self._lock:
            if key not in self._entries or self._pins.get(key):
                return False
            self._drop(key)
        release_memory(self._device())
        return True

    def release(self, kinds: tuple[str, ...] | None = None) -> None:
        """Drop every model not in use (of ``kinds``, or all) and free memory (``Engine.free``, ``POST /free``)."""
        with self._lock:
            for key in [k for k, e in self._entries.items()
                        if not self._pins.get(k) and (kinds is None or e.kind in kinds)]:
                self._drop(key)
        if self._devices is not None and kinds is None:
            self._devices.release()
        release_memory(self._device())

    def _device(self) -> Any:
        return self._devices.device if self._devices is not None else None


def _part(handle: ModelHandle, part: str) -> ModelHandle:
    import dataclasses

    return dataclasses.replace(handle, part=part)


def _sized(handle: ModelHandle, nbytes: int) -> ModelHandle:
    import dataclasses

    return dataclasses.replace(handle, size=nbytes)


def _measure(value: Any) -> int:
    from nodegraph.cache import estimate_size

    return int(estimate_size(value))


__all__ = ["ModelManager", "ModelStats", "CheckpointHandles", "fingerprint"]
