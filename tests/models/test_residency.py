"""VRAM residency: LRU offload within the budget, modules in use kept, partial loading of oversized modules.

The CPU stands in for the accelerator: "on the device" is float64, "on the host" float32, so every move shows.
"""

from __future__ import annotations

import gc

import torch
from torch import nn

from nodegraph.models.residency import Residency, module_bytes

F64, F32 = torch.float64, torch.float32


def _mlp(seed: int, width: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, width), nn.GELU(), nn.Linear(width, width), nn.LayerNorm(width),
                         nn.Linear(width, 8)).eval()


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _residency(budget: int | None) -> Residency:
    return Residency("cpu", F64, budget, home="cpu", home_dtype=F32)


def test_least_recently_used_modules_go_home_when_the_budget_is_short() -> None:
    a, b, c = _mlp(0), _mlp(1), _mlp(2)
    size = module_bytes(a) * 2  # float64 on the device: twice the float32 bytes
    res = _residency(int(size * 2.5))
    for m in (a, b):
        with res.use(m):
            pass
    assert _dtype(a) == _dtype(b) == F64 and res.resident() == [a, b]
    with res.use(a):  # a becomes the most recent
        pass
    with res.use(c):
        pass
    assert _dtype(b) == F32 and _dtype(a) == _dtype(c) == F64
    assert res.resident() == [a, c] and res.offloads == 1 and res.nbytes <= res.budget


def test_modules_in_use_together_are_never_offloaded_for_each_other() -> None:
    a, b = _mlp(0), _mlp(1)
    res = _residency(module_bytes(a) * 2 + 1)  # room for one module
    with res.use(a, b):
        # b did not fit beside a (in use): it is loaded partly instead of pushing a out
        assert _dtype(a) == F64
        x = torch.randn(2, 8, dtype=F64)
        b(x)
    assert res.resident() == [a] and _dtype(b) == F32


def test_partial_load_streams_the_largest_layers_and_matches_a_full_load() -> None:
    big = _mlp(3, width=256)
    reference = _mlp(3, width=256).to(F64)
    x = torch.randn(4, 8, dtype=F64)
    largest = big[2]  # the 256x256 Linear
    res = _residency(module_bytes(big) // 2)  # half of its float32 size: a quarter of what it needs
    with res.use(big):
        assert largest.weight.dtype == F32  # left on the host until its forward call
        assert big[0].weight.dtype == F64  # small layers placed on the device
        out = big(x)
        assert largest.weight.dtype == F32  # and sent back after it
    assert res.streamed >= 1 and res.resident() == []  # a partly loaded module does not stay
    assert _dtype(big) == F32
    assert torch.equal(out, reference(x))


def test_a_dropped_module_frees_its_place() -> None:
    res = _residency(10**9)
    a = _mlp(0)
    with res.use(a):
        pass
    assert res.nbytes == module_bytes(a)
    del a
    gc.collect()
    assert res.nbytes == 0 and res.resident() == []


def test_cpu_without_budget_moves_nothing() -> None:
    res = Residency("cpu", F32, None)
    a = _mlp(0)
    weight = a[0].weight
    with res.use(a):
        pass
    assert a[0].weight is weight and not res.tracking and res.resident() == []


def test_bfloat16_and_float8_modules_keep_their_dtype():
    """A float16 device casts float32 modules, but bfloat16 ones (Flux) and float8 storage stay as they are."""
    import torch

    from nodegraph.models.residency import Residency, keeps_dtype

    res = Residency("cpu", torch.float16)
    plain, bf16 = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).to(torch.bfloat16)
    with res.use(plain, bf16):
        assert plain.weight.dtype == torch.float16 and bf16.weight.dtype == torch.bfloat16
    fp8 = torch.nn.Linear(4, 4)
    fp8.weight.data = fp8.weight.data.to(torch.float8_e4m3fn)
    assert keeps_dtype(fp8) and keeps_dtype(bf16) and not keeps_dtype(plain)
    partial = Residency("cpu", torch.float16, budget=0)  # nothing fits: the big layers are streamed
    with partial.use(bf16):
        assert bf16(torch.ones(1, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
