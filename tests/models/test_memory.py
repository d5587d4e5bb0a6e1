"""Machine memory readings, default budgets and budget sizes as users write them."""

from __future__ import annotations

import sys

import pytest

from nodegraph.config import EngineConfig
from nodegraph.models import memory
from nodegraph.models.memory import Budgets, parse_bytes


def test_readings_are_plausible() -> None:
    total = memory.total_ram()
    assert total > 256 * 1024**2
    assert 0 < memory.available_ram() <= total
    assert 0 < memory.process_rss() < total
    assert memory.device_memory("cpu") is None


def test_default_budgets_follow_the_machine_and_config_wins(tmp_path) -> None:
    config = EngineConfig(home=tmp_path)
    budgets = Budgets.from_config(config, "cpu")
    assert budgets == Budgets(ram=memory.total_ram() // 2, vram=None)
    config.model_ram_budget, config.model_vram_budget = 123, 456
    assert Budgets.from_config(config, "cpu") == Budgets(123, 456)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_without_psutil_proc_is_read(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *args, **kwargs):
        if name == "psutil":
            raise ImportError("no psutil here")
        return real_import(name, *args, **kwargs)

    with_psutil = memory.total_ram()
    monkeypatch.setattr(builtins, "__import__", no_psutil)
    assert memory.total_ram() == with_psutil
    assert memory.process_rss() > 0


def test_parse_bytes() -> None:
    assert parse_bytes("6G") == 6 * 1024**3
    assert parse_bytes("512MiB") == 512 * 1024**2
    assert parse_bytes("1.5gb") == int(1.5 * 1024**3)
    assert parse_bytes("1000") == 1000
    assert parse_bytes("50%") == memory.total_ram() // 2
    with pytest.raises(ValueError, match="write e.g. 6G, 512M, 40%"):
        parse_bytes("lots")
