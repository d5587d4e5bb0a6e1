"""Custom sampling as a node runs it: the model loaded through the engine's model manager, progress and previews to
the client, LoRAs applied, and samplers looked up by name in the engine's table."""

from __future__ import annotations

from typing import Any

from . import guiders


def sampler_by_name(ctx: Any, name: str) -> guiders.Sampler:
    """The SAMPLER for ``sampler_name``: a plugin sampler, else nodegraph's k-diffusion implementation of it."""
    table = ctx.samplers
    if name in table.samplers:
        return guiders.Sampler(name, table.samplers[name].fn)
    try:
        from .ksamplers import k_sampler
    except ImportError as exc:  # pragma: no cover - the k-diffusion samplers ship with nodegraph
        raise ValueError(f"sampler_name {name!r}: the k-diffusion samplers are not available ({exc})") from None
    try:
        return guiders.Sampler(name, k_sampler(name))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"sampler_name {name!r} has no k-diffusion implementation here ({exc}); choose another "
                         f"sampler_name") from None


def sampler_problem(config: Any, name: str) -> str | None:
    """Why KSamplerSelect cannot offer ``name`` on the engine owning ``config``, naming what can; None when it can."""
    from .custom import samplers_of
    from .ksamplers import KSAMPLERS

    table = samplers_of(config)
    if name in table.samplers or name in KSAMPLERS:
        return None
    return (f"sampler {name!r} has no k-diffusion implementation for custom sampling yet; choose one of: "
            f"{', '.join([*KSAMPLERS, *table.samplers])}")


def model_sigmas(ctx: Any, model: Any, scheduler: str, steps: int, denoise: float) -> Any:
    """BasicScheduler's SIGMAS for a MODEL (handle or model)."""
    from .sigmas import model_schedule

    loaded = ctx.models.get(model)
    return model_schedule(loaded, scheduler, steps, denoise, ctx.samplers)


def run_custom(ctx: Any, guider: guiders.Guider, sampler: Any, sigmas: Any, noise: Any,
               latent: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """SamplerCustomAdvanced: (output, denoised_output) LATENTs; reports progress and previews to the client."""
    if not isinstance(guider, guiders.Guider):
        raise TypeError(f"guider: got {type(guider).__name__}; connect CFGGuider, BasicGuider or DualCFGGuider")
    if not callable(sampler):
        raise TypeError(f"sampler: got {type(sampler).__name__}; connect KSamplerSelect")

    def progress(step: int, total: int, preview: Any) -> None:
        ctx.progress(step, total, preview)

    with ctx.models.use(guider.model) as (loaded,):
        library = ctx.models.lora_library() if loaded.loras else None
        return guiders.sample_custom(guider, sampler, sigmas, noise, dict(latent), ctx.devices, progress,
                                     model=loaded, lora_library=library)


def add_noise(ctx: Any, model: Any, noise: Any, sigmas: Any, latent: dict[str, Any]) -> dict[str, Any]:
    """AddNoise: ``latent`` noised by ``noise`` to the level the sigmas span."""
    return guiders.add_noise(ctx.models.get(model), noise, sigmas, dict(latent))


def sampler_with_options(name: str, **options: Any) -> guiders.Sampler:
    """A SAMPLER running the built-in k-diffusion sampler ``name`` with fixed keyword ``options`` (eta, s_noise, …),
    as ComfyUI's sampler nodes (SamplerEulerAncestral, SamplerDPMPP_2M_SDE, …) make them."""
    from .ksamplers import k_sampler

    return guiders.Sampler(name, k_sampler(name), dict(options))


def model_percent_sigma(ctx: Any, model: Any, percent: float, actual: bool = False) -> float:
    """SamplingPercentToSigma: the MODEL's noise level ``percent`` of the way through sampling."""
    from .sigmas import percent_to_sigma

    return percent_to_sigma(ctx.models.get(model), percent, actual)
