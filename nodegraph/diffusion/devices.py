"""Device and dtype policy, moving models onto the accelerator only while they work, and reproducibility scoped to
the work (``--deterministic`` changes torch's global switches only inside ``scope()``/``use()``, then restores them).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: cuBLAS needs a fixed workspace for reproducible matmuls (read when torch first creates a cuBLAS handle).
CUBLAS_WORKSPACE = ":4096:8"


class OutOfMemory(RuntimeError):
    """The accelerator ran out of memory; models were freed. The message says what to try."""


@dataclass(frozen=True)
class _Switches:
    algorithms: bool
    warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    cublas: str | None


def _switches() -> _Switches:
    import torch

    return _Switches(torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled(),
                     bool(torch.backends.cudnn.benchmark), bool(torch.backends.cudnn.deterministic),
                     os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def _set(switches: _Switches) -> None:
    import torch

    if switches.cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = switches.cublas
    torch.use_deterministic_algorithms(switches.algorithms, warn_only=switches.warn_only)
    torch.backends.cudnn.benchmark = switches.cudnn_benchmark
    torch.backends.cudnn.deterministic = switches.cudnn_deterministic


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic torch kernels (and cuBLAS workspace, cuDNN settings) for the block; the previous state after."""
    if not enabled:
        yield
        return
    before = _switches()
    _set(_Switches(True, True, False, True, before.cublas or CUBLAS_WORKSPACE))
    try:
        yield
    finally:
        _set(before)


class DeviceManager:
    """Picks cuda > mps > cpu (or the CPU when forced) and the dtype; keeps modules resident within a VRAM budget.

    Nodes call ``with manager.use(unet, text_encoder): ...``; modules stay on the device after use (resident
    across runs) until memory runs short, when the least recently used ones go back to the CPU, or a module too
    large for the room left is loaded partly (see ``nodegraph.models.residency``). With ``deterministic`` the
    block runs with deterministic kernels, and torch's global switches are restored afterwards.
    """

    def __init__(self, force_cpu: bool = False, deterministic: bool = False, vram_budget: int | None = None) -> None:
        import torch

        from nodegraph.models.residency import Residency

        if not force_cpu and torch.cuda.is_available():
            self.device = torch.device("cuda")
            self.dtype = torch.float16
        elif not force_cpu and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            self.device = torch.device("mps")
            self.dtype = torch.float16
        else:
            self.device = torch.device("cpu")
            self.dtype = torch.float32
        self.deterministic = deterministic
        if vram_budget is None and self.device.type != "cpu":
            from nodegraph.models.memory import default_vram_budget

            vram_budget = default_vram_budget(self.device)
        self.residency = Residency(self.device, self.dtype, vram_budget if self.device.type != "cpu" else None)

    @classmethod
    def from_config(cls, config: Any) -> "DeviceManager":
        """Build from an EngineConfig (``force_cpu``, ``deterministic``, ``model_vram_budget``)."""
        return cls(force_cpu=bool(getattr(config, "force_cpu", False)),
                   deterministic=bool(getattr(config, "deterministic", False)),
                   vram_budget=getattr(config, "model_vram_budget", None))

    def describe(self) -> dict[str, str]:
        """Device and dtype as strings (for manifests and /system_stats)."""
        return {"device": str(self.device), "dtype": str(self.dtype).replace("torch.", "")}

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """The run's reproducibility settings for a block (deterministic kernels when configured)."""
        return deterministic(self.deterministic)

    #: a narrower dtype computed by per-operation casts (``torch.autocast``) inside ``use`` (``for_model``'s views)
    cast: Any = None

    @contextlib.contextmanager
    def use(self, *modules: Any) -> Iterator[None]:
        """Move ``modules`` to the device/dtype for the duration (they stay resident afterwards)."""
        import torch

        cast = (torch.autocast(self.device.type, dtype=self.cast) if self.cast is not None
                else contextlib.nullcontext())
        try:
            with self.scope(), self.residency.use(*modules), cast:
                yield
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            self.release()
            raise OutOfMemory(f"the GPU ran out of memory ({exc}); models were freed. Try a smaller size or "
                              "batch, a lower model_vram_budget, or run with --cpu") from None

    def release(self) -> None:
        """Move every resident module back to the CPU and empty the accelerator cache."""
        self.residency.release()
        gc.collect()
        self.empty_cache()

    def empty_cache(self) -> None:
        """Return cached accelerator memory to the driver."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def for_model(devices: Any, model: Any) -> Any:
    """The device policy ``model`` samples under: ``devices`` itself, or (ModelComputeDtype) a view of it computing
    in the model's dtype. A wider dtype converts the weights while in use (lossless); a narrower one keeps them and
    casts per operation (``torch.autocast``), so the weights are never rounded for good. Where torch cannot autocast
    to it on this device (fp16 on some CPUs) the engine's dtype is kept and a note logged."""
    import copy

    import torch

    from .model_sampling import compute_dtype_of

    name = compute_dtype_of(getattr(model, "scheduler_config", None) or {})
    if name is None or not isinstance(devices, DeviceManager):
        return devices
    want = getattr(torch, _TORCH_DTYPES[name])
    if want == devices.dtype:
        return devices
    view = copy.copy(devices)
    view.residency = copy.copy(devices.residency)  # shares the table of resident modules
    view.dtype = want
    if want.itemsize > devices.dtype.itemsize:
        view.residency.dtype = want
        return view
    import warnings

    try:
        with warnings.catch_warnings(record=True), torch.autocast(devices.device.type, dtype=want):
            probe = torch.ones(1, 1, 2, 2, device=devices.device)
            got = torch.nn.functional.conv2d(probe, torch.ones(1, 1, 1, 1, device=devices.device)).dtype
    except (RuntimeError, AssertionError) as exc:
        got, why = None, str(exc)
    else:
        why = f"autocast gave {got}"
    if got != want:
        log.warning("ModelComputeDtype: torch cannot compute in %s on %s here (%s); computing in %s instead",
                    name, devices.device, why, str(devices.dtype).replace("torch.", ""))
        return devices
    view.cast = want
    return view
