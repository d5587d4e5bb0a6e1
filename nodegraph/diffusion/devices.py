"""Device and dtype policy, and moving models onto the accelerator only while they work."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from typing import Any, Iterator

log = logging.getLogger(__name__)


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory; models were freed. The message says what to try."""


class DeviceManager:
    """Picks cuda > mps > cpu (or the CPU when forced), the dtype, and keeps modules resident within a budget.

    Nodes call ``with manager.use(unet, text_encoder): ...``; modules stay on the device after use (resident
    across runs) until memory runs short, when the least recently used ones are moved back to the CPU.
    """

    def __init__(self, force_cpu: bool = False, deterministic: bool = False) -> None:
        import torch

        if not force_cpu and torch.cuda.is_available():
            self.device = torch.device("cuda")
            self.dtype = torch.float16
        elif not force_cpu and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            self.device = torch.device("mps")
            self.dtype = torch.float16
        else:
            self.device = torch.device("cpu")
            self.dtype = torch.float32
        if deterministic:
            # cuBLAS needs a fixed workspace for reproducible matmuls; it must be set before the CUDA context exists.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = False
                torch.backends.cudnn.deterministic = True
        self._resident: list[Any] = []  # LRU order, most recent last

    @classmethod
    def from_config(cls, config: Any) -> "DeviceManager":
        """Build from an EngineConfig (``force_cpu``, ``deterministic``)."""
        return cls(force_cpu=bool(getattr(config, "force_cpu", False)),
                   deterministic=bool(getattr(config, "deterministic", False)))

    def describe(self) -> dict[str, str]:
        """Device and dtype as strings (for manifests and /system_stats)."""
        return {"device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    def _free_bytes(self) -> int | None:
        import torch

        if self.device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free)

    def _bytes(self, module: Any) -> int:
        return sum(p.element_size() * p.numel() for p in module.parameters())

    def _offload_until(self, needed: int, keep: list[Any]) -> None:
        free = self._free_bytes()
        while free is not None and free < needed * 1.2 and any(m not in keep for m in self._resident):
            victim = next(m for m in self._resident if m not in keep)
            self._resident.remove(victim)
            victim.to("cpu")
            self.empty_cache()
            free = self._free_bytes()

    @contextlib.contextmanager
    def use(self, *modules: Any) -> Iterator[None]:
        """Move ``modules`` to the device/dtype for the duration (they stay resident afterwards)."""
        import torch

        mods = [m for m in modules if m is not None]
        try:
            for m in mods:
                if m in self._resident:
                    self._resident.remove(m)
                else:
                    self._offload_until(self._bytes(m), mods)
                    first = next(m.parameters(), None)
                    if first is None or first.device != self.device or first.dtype != self.dtype:
                        m.to(self.device, self.dtype)
                self._resident.append(m)
            yield
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            self.release()
            raise OutOfMemory(f"the GPU ran out of memory ({exc}); models were freed. Try a smaller size or "
                              "batch, or run with --cpu") from None

    def release(self) -> None:
        """Move every resident module back to the CPU and empty the accelerator cache."""
        for m in self._resident:
            m.to("cpu")
        self._resident.clear()
        gc.collect()
        self.empty_cache()

    def empty_cache(self) -> None:
        """Return cached accelerator memory to the driver."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()
