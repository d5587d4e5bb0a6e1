"""The bounded, content-addressed output cache shared by runs in one process.

Bounded by bytes (``EngineConfig.cache_max_bytes``): entries of small values cost little, so graphs of thousands of
nodes re-run fully cached. Models are not held here: loaders return light handles (``nodegraph.models``) whose
weights the ModelManager owns within its own budget. An entry count cap exists for tests (``max_entries``).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


#: Default bound on the bytes of cached outputs.
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Bookkeeping bytes of one entry (key, entry object, ordered-dict slot), counted on top of its values.
ENTRY_OVERHEAD = 200


def estimate_size(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Approximate bytes held by ``obj``: tensors and arrays by their storage, modules by their parameters.

    An object's own ``nbytes`` wins (numpy arrays, model wrappers, model handles: a handle's is tiny).
    """
    if obj is None or isinstance(obj, (bool, int, float)):
        return 32
    if isinstance(obj, str):
        return 49 + len(obj)
    seen = _seen if _seen is not None else set()
    if id(obj) in seen or _depth > 6:
        return 0
    seen.add(id(obj))
    nbytes = getattr(obj, "nbytes", None)  # numpy arrays, our model wrappers
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # torch tensors
        return int(obj.element_size() * obj.numel())
    if callable(getattr(obj, "parameters", None)) and callable(getattr(obj, "buffers", None)):  # torch modules
        return sum(int(t.element_size() * t.numel()) for t in (*obj.parameters(), *obj.buffers()))
    if hasattr(obj, "size") and hasattr(obj, "mode") and hasattr(obj, "getbands"):  # PIL images
        return obj.size[0] * obj.size[1] * len(obj.getbands())
    if isinstance(obj, (bytes, bytearray, str)):
        return len(obj)
    if isinstance(obj, dict):
        return 64 + sum(estimate_size(v, seen, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return 56 + sum(estimate_size(v, seen, _depth + 1) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return 64 + sum(estimate_size(v, seen, _depth + 1) for v in vars(obj).values())
    return sys.getsizeof(obj, 64)


@dataclass
class CacheEntry:
    """A node's outputs and UI payload, with its approximate size."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None
    nbytes: int


@dataclass
class CacheStats:
    """Counters for observing the cache."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


class OutputCache:
    """LRU cache of node results keyed by content hash; bounded by approximate bytes (and entries, when capped)."""

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Approximate bytes held."""
        return self._bytes

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` (marked most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry

    def put(self, key: str, outputs: tuple[Any, ...], ui: dict[str, Any] | None = None) -> None:
        """Store a result, then evict least recently used entries until within bounds (the newest always stays)."""
        size = estimate_size(outputs) + estimate_size(ui) + ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[key] = CacheEntry(outputs, ui, size)
            self._bytes += size
            while len(self._entries) > 1 and (self._bytes > self.max_bytes or
                                              (self.max_entries is not None and len(self._entries) > self.max_entries)):
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.stats.evictions += 1

    def clear(self) -> None:
        """Drop everything (``POST /free``)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
