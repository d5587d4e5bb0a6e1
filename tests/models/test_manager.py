"""The ModelManager: a RAM budget that really frees, pinning while in use, reloads, and handles in the cache."""

from __future__ import annotations

import gc
import pickle
import weakref

import pytest
import torch

from nodegraph.cache import OutputCache, estimate_size
from nodegraph.context import Services
from nodegraph.diffusion.devices import DeviceManager
from nodegraph.diffusion.types import LoraPatch
from nodegraph.models import Budgets, ModelManager, derive, model_manager, resolve


def _manager(ram: int) -> ModelManager:
    return ModelManager(Budgets(ram=ram), devices=DeviceManager(force_cpu=True))


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_sd) -> int:
    """Bytes of the tiny checkpoint once loaded (measured by a manager without a budget to speak of)."""
    manager = _manager(10**12)
    model, _, _ = manager.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd")
    return model.size


def _unet_out(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    text = torch.randn(1, 77, 32, generator=gen)
    with torch.no_grad():
        return model.unet(x, 10, encoder_hidden_states=text).sample


def test_eviction_under_a_byte_budget_frees_the_modules(tiny_sd, checkpoint_bytes) -> None:
    manager = _manager(int(checkpoint_bytes * 1.5))
    model, clip, vae = manager.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd")
    refs = [weakref.ref(model.get().unet), weakref.ref(clip.get().encoders[0]), weakref.ref(vae.get().vae)]
    assert model.size == checkpoint_bytes and manager.nbytes == checkpoint_bytes
    manager.load_checkpoint(tiny_sd.single_file, tiny_sd.config, name="tiny-sd.safetensors")
    gc.collect()
    assert [r() for r in refs] == [None, None, None]  # nothing else held the first checkpoint's modules
    assert manager.stats.evictions == 1 and len(manager) == 1
    assert manager.stats.peak_bytes <= manager.budgets.ram  # evicted before loading, not after
    assert [name for _, name, _ in manager.loaded()] == ["tiny-sd.safetensors"]


def test_pinned_models_are_not_evicted_while_in_use(tiny_sd, checkpoint_bytes) -> None:
    manager = _manager(int(checkpoint_bytes * 1.5))
    model, _, _ = manager.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd")
    with manager.use(model, 7) as (loaded, seven):
        assert seven == 7  # plain values pass through
        ref = weakref.ref(loaded.unet)
        manager.load_checkpoint(tiny_sd.single_file, tiny_sd.config, name="tiny-sd.safetensors")
        assert model.key in manager and len(manager) == 2  # over budget rather than evicting a model in use
        assert manager.evict(model.key) is False
        _unet_out(loaded)
    del loaded
    gc.collect()
    assert ref() is None  # unpinned at the end of the block, then evicted to return within the budget
    assert manager.nbytes <= manager.budgets.ram


def test_reload_after_eviction_gives_identical_outputs(tiny_sd) -> None:
    manager = _manager(10**12)
    model, clip, _ = manager.load_checkpoint(tiny_sd.single_file, tiny_sd.config, name="tiny")
    before = _unet_out(model.get())
    ref = weakref.ref(model.get().unet)
    assert manager.evict(model.key) is True
    gc.collect()
    assert ref() is None and model.key not in manager
    after = _unet_out(model.get())  # the handle in the cache still works: it loads the file again
    assert torch.equal(before, after)
    assert (manager.stats.loads, manager.stats.reloads) == (1, 1)
    assert clip.get().encoders[0] is manager.get(clip).encoders[0]  # one load serves all three parts


def test_handles_are_cheap_in_the_output_cache(tiny_sd, checkpoint_bytes) -> None:
    manager = _manager(10**12)
    handles = manager.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd")
    cache = OutputCache(max_bytes=64 * 1024)
    cache.put("ckpt", handles)
    assert cache.nbytes < 4096 < checkpoint_bytes // 100
    assert estimate_size(handles[0].get()) > 100 * estimate_size(handles[0])
    assert len(cache) == 1 and cache.stats.evictions == 0
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(handles[0])


def test_derived_handles_share_weights(tiny_sd) -> None:
    manager = _manager(10**12)
    model, clip, _ = manager.load_checkpoint(tiny_sd.folder, tiny_sd.config, name="tiny-sd")
    patch = LoraPatch("style", "/x/style.safetensors", 0.5)
    skipped = derive(clip, stop_at_layer=-2)
    assert skipped.get().stop_at_layer == -2 and clip.get().stop_at_layer == -1
    assert skipped.get().encoders[0] is clip.get().encoders[0]
    patched = model.with_lora(patch).with_lora(patch)
    assert patched.loras == (patch, patch) and resolve(patched).loras == (patch, patch)
    assert resolve(patched).unet is resolve(model).unet and model.loras == ()
    assert resolve(3) == 3 and derive(resolve(clip), stop_at_layer=-3).stop_at_layer == -3


def test_the_engine_services_share_one_manager_and_device_manager(tiny_sd) -> None:
    services = Services()
    manager = model_manager(services, tiny_sd.config)
    assert model_manager(services, tiny_sd.config) is manager
    assert services.find(DeviceManager) is manager.devices
    assert manager.budgets.ram > 0 and manager.budgets.vram is None  # the CPU has no VRAM budget
