"""How much memory the machine has and this process uses, and the default model budgets derived from it.

psutil is used when installed; otherwise ``/proc`` (Linux) or ``os.sysconf``. Accelerator memory comes from torch,
imported only when asked about a CUDA device.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

#: Default share of physical RAM that models may hold.
RAM_SHARE = 0.5
#: Default share of an accelerator's memory that resident models may hold.
VRAM_SHARE = 0.9


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def total_ram() -> int:
    """Physical RAM in bytes (0 when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    info = _meminfo()
    if "MemTotal" in info:
        return info["MemTotal"]
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def available_ram() -> int:
    """RAM available to new allocations in bytes (0 when it cannot be read)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return _meminfo().get("MemAvailable", 0)


def process_rss() -> int:
    """Resident set size of this process in bytes (0 when it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def device_memory(device: Any) -> tuple[int, int] | None:
    """(free, total) bytes of a CUDA device, or None for the CPU, MPS and anything torch cannot measure."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    free, total = torch.cuda.mem_get_info(device)
    return int(free), int(total)


@dataclass(frozen=True)
class Budgets:
    """Bytes that loaded models may hold in RAM and on the accelerator (``vram`` None: no accelerator budget)."""

    ram: int
    vram: int | None = None

    @classmethod
    def from_config(cls, config: Any, device: Any = None) -> "Budgets":
        """``config.model_ram_budget``/``model_vram_budget`` when set (bytes), else the machine's defaults."""
        ram = getattr(config, "model_ram_budget", None)
        vram = getattr(config, "model_vram_budget", None)
        if ram is None:
            ram = default_ram_budget()
        if vram is None and device is not None:
            vram = default_vram_budget(device)
        return cls(int(ram), None if vram is None else int(vram))


def default_ram_budget() -> int:
    """Half the physical RAM (4 GiB when it cannot be read)."""
    total = total_ram()
    return int(total * RAM_SHARE) if total else 4 * 1024**3


def default_vram_budget(device: Any) -> int | None:
    """90% of a CUDA device's memory, or of what Metal recommends on MPS; None for the CPU."""
    if getattr(device, "type", str(device)) == "mps":  # pragma: no cover - Apple only
        import torch

        return int(torch.mps.recommended_max_memory() * VRAM_SHARE)
    mem = device_memory(device)
    return None if mem is None else int(mem[1] * VRAM_SHARE)


def release_memory(device: Any = None) -> None:
    """Collect garbage and return cached accelerator memory to the driver, so dropped models really go."""
    gc.collect()
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()
    elif getattr(device, "type", None) == "mps":  # pragma: no cover - Apple only
        import torch

        torch.mps.empty_cache()


def parse_bytes(text: str, total: int | None = None) -> int:
    """``"6G"``, ``"512M"``, ``"1.5GiB"``, ``"40%"`` (of ``total``, default the RAM), or plain bytes → bytes.

    ValueError says the accepted forms (also for negative or unbounded sizes).
    """
    raw = text.strip().upper().replace("IB", "").rstrip("B")
    try:
        if raw.endswith("%"):
            share = float(raw[:-1])
            if not 0 <= share <= 100:
                raise ValueError(text)
            value = int((total_ram() if total is None else total) * share / 100)
        else:
            units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
            value = int(float(raw[:-1]) * units[raw[-1]]) if raw and raw[-1] in units else int(float(raw))
        if value < 0:
            raise ValueError(text)
        return value
    except (ValueError, OverflowError):
        raise ValueError(f"memory size {text!r} not understood; write e.g. 6G, 512M, 40% or a number of bytes") \
            from None


def accelerator_memory() -> int:
    """Total bytes of the accelerator torch would use (CUDA's, or what Metal recommends on MPS); 0 without one."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[1])
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():  # pragma: no cover - Apple only
        return int(torch.mps.recommended_max_memory())
    return 0


def parse_vram_bytes(text: str) -> int:
    """As ``parse_bytes``, but a percentage is of the accelerator's memory (ValueError when there is none)."""
    if text.strip().endswith("%"):
        total = accelerator_memory()
        if not total:
            raise ValueError(f"VRAM budget {text!r}: no GPU found to take a percentage of; give a size such as 6G")
        return parse_bytes(text, total)
    return parse_bytes(text)
