"""Model memory: one ModelManager per engine owns every loaded model, within RAM and VRAM budgets.

- ``manager.ModelManager``: models keyed by file fingerprint (+ dtype/device), LRU eviction that frees memory,
  pinning while in use; loaders get light ``handles.ModelHandle`` objects back.
- ``residency.Residency``: modules kept on the accelerator within the VRAM budget (partly loaded when short).
- ``folders``: the one table of model folders and the extensions each lists and loads.
- ``memory``: machine memory, process RSS and the default budgets.

``model_manager(services, config)`` gives the engine's manager (sharing the engine's DeviceManager service).
"""

from __future__ import annotations

from typing import Any

from .handles import ModelHandle, derive, is_handle, resolve
from .manager import ModelManager, ModelStats
from .memory import Budgets


def model_manager(services: Any, config: Any) -> ModelManager:
    """The engine's ModelManager service, created on first use around the engine's DeviceManager service."""
    manager = services.find(ModelManager)
    if manager is None:
        from nodegraph.diffusion.devices import DeviceManager

        devices = services.get(DeviceManager, lambda: DeviceManager.from_config(config))
        manager = ModelManager.from_config(config, devices)
        services.put(ModelManager, manager)
    return manager


def lora_library(services: Any, config: Any) -> Any:
    """The engine's LoraLibrary service, holding parsed LoRA files in the engine's ModelManager."""
    from nodegraph.diffusion.lora import LoraLibrary

    return services.get(LoraLibrary, lambda: LoraLibrary(model_manager(services, config)))


__all__ = ["ModelManager", "ModelStats", "ModelHandle", "Budgets", "model_manager", "lora_library", "derive",
           "is_handle", "resolve"]
