"""--deterministic is scoped to the work: torch's global switches are restored afterwards."""

from __future__ import annotations

import os

import torch

from nodegraph.diffusion.devices import CUBLAS_WORKSPACE, DeviceManager, deterministic


def _state() -> tuple:
    return (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


def test_deterministic_is_scoped_and_restored(monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _state()
    assert before[0] is False
    devices = DeviceManager(force_cpu=True, deterministic=True)
    assert _state() == before  # constructing it changes nothing
    layer = torch.nn.Linear(2, 2)
    with devices.use(layer):
        assert _state() == (True, True, CUBLAS_WORKSPACE)
        with deterministic():  # nested scopes restore to the outer one
            pass
        assert torch.are_deterministic_algorithms_enabled()
    assert _state() == before


def test_restored_after_an_error_and_a_user_setting_kept(monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    try:
        with deterministic():
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # the user's choice wins
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert _state() == (False, False, ":16:8")
    with DeviceManager(force_cpu=True).scope():  # not deterministic: nothing changes
        assert not torch.are_deterministic_algorithms_enabled()
