"""The initial noise of a sampling run, drawn as ComfyUI draws it (one generator, per batch index when given)."""

from __future__ import annotations

from typing import Any


def make_noise(shape: tuple[int, ...], gen: Any, batch_index: list[int] | None = None) -> Any:
    """Gaussian noise from a CPU generator in float32 (one draw for the batch; per index with ``batch_index``)."""
    import torch

    if not batch_index:
        return torch.randn(shape, generator=gen, dtype=torch.float32)
    draws = {}
    for i in range(max(batch_index) + 1):
        noise = torch.randn((1, *shape[1:]), generator=gen, dtype=torch.float32)
        if i in batch_index:
            draws[i] = noise
    return torch.cat([draws[i] for i in batch_index])


def start_noise(opts: Any, samples: Any, latent: dict[str, Any]) -> tuple[Any, Any]:
    """(generator, noise) for KSampler: the CPU generator seeded with ``opts.seed`` (the steps draw from it next) and
    noise shaped like ``samples`` (zeros when ``opts.add_noise`` is off)."""
    import torch

    gen = torch.Generator("cpu").manual_seed(int(opts.seed))
    noise = make_noise(tuple(samples.shape), gen, latent.get("batch_index")) if opts.add_noise \
        else torch.zeros_like(samples)
    return gen, noise
