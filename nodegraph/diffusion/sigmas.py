"""SIGMAS values (1-D float32 CPU tensors of descending noise levels) as ComfyUI's scheduler nodes compute them.

The formulas are k-diffusion's (Karras et al. 2022 for ``karras``; log-linear ``exponential``; ``polyexponential``)
and ComfyUI's for the model-bound ones (``model_schedule``: BasicScheduler; ``beta``; ``sd_turbo``). Noise levels
of a model come from its checkpoint's training betas: sigma(t) = sqrt((1 - a_t) / a_t).
"""

from __future__ import annotations

import math
from typing import Any

from .types import DiffusionModel


def _zero_appended(values: Any) -> Any:
    import torch

    values = torch.as_tensor(values, dtype=torch.float32)
    return torch.cat([values, values.new_zeros([1])])


def training_sigmas(model: DiffusionModel) -> Any:
    """The model's training noise levels (ascending in t), float64 numpy."""
    from .sampling import _sigma_table

    return _sigma_table(model.scheduler_config)


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Any:
    """Karras et al.'s schedule: ``steps`` levels evenly spaced in sigma^(1/rho), then 0."""
    import torch

    ramp = torch.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _zero_appended((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> Any:
    """``steps`` levels evenly spaced in log sigma, then 0."""
    import torch

    return _zero_appended(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> Any:
    """``steps`` levels spaced in log sigma by a power ``rho`` of the ramp (1 = exponential), then 0."""
    import torch

    ramp = torch.linspace(1, 0, steps) ** rho
    return _zero_appended(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def beta(model: DiffusionModel, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> Any:
    """The beta schedule (Lee et al. 2024): training timesteps at the Beta(alpha, beta) quantiles, repeats dropped."""
    import numpy as np
    from scipy import stats

    sig = training_sigmas(model)
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta_) * (len(sig) - 1))
    out, last = [], None
    for t in ts:
        if t != last:
            out.append(float(sig[int(t)]))
        last = t
    return _zero_appended(out)


def sd_turbo(model: DiffusionModel, steps: int, denoise: float) -> Any:
    """SD-Turbo's schedule: ``steps`` of the timesteps 999, 899, …, 99, starting ``10 - int(10 * denoise)`` in."""
    sig = training_sigmas(model)
    start = 10 - int(10 * denoise)
    ts = [999 - 100 * i for i in range(10)][start:start + steps]
    return _zero_appended([float(sig[min(t, len(sig) - 1)]) for t in ts])


def model_schedule(model: DiffusionModel, scheduler: str, steps: int, denoise: float, table: Any) -> Any:
    """BasicScheduler: the model's ``scheduler`` schedule over ``int(steps / denoise)`` steps, its last ``steps``.

    ``table`` is the engine's ``SamplerRegistry`` (built-in and plugin schedules).
    """
    import torch

    if getattr(model, "family", "unet") != "unet":  # flow transformers: shifted flow sigmas
        from .flow.custom import model_schedule as flow_schedule

        return flow_schedule(model, scheduler, steps, denoise)

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0, dtype=torch.float32)
        total = int(steps / denoise)
    from .model_sampling import time_maps

    train = training_sigmas(model)
    full = torch.as_tensor(table.sigmas(scheduler, total, 1.0 / (train ** 2 + 1.0), time_maps(model.scheduler_config)),
                           dtype=torch.float32)
    return full[-(steps + 1):]


def split(sigmas: Any, step: int) -> tuple[Any, Any]:
    """SplitSigmas: (the first ``step + 1`` levels, the levels from ``step`` on); they share level ``step``."""
    return sigmas[:step + 1], sigmas[step:]


def split_denoise(sigmas: Any, denoise: float) -> tuple[Any, Any]:
    """SplitSigmasDenoise: the last ``round(steps * denoise)`` steps go low, the rest high (as ComfyUI slices)."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low = round(steps * denoise)
    return sigmas[:-low], sigmas[-(low + 1):]


def flip(sigmas: Any) -> Any:
    """FlipSigmas: reversed (ascending); a leading 0 becomes 0.0001."""
    if len(sigmas) == 0:
        return sigmas
    out = sigmas.flip(0).clone()
    if out[0] == 0:
        out[0] = 0.0001
    return out


def set_first(sigmas: Any, sigma: float) -> Any:
    """SetFirstSigma: a copy with the first level replaced."""
    out = sigmas.clone()
    out[0] = sigma
    return out


def laplace(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta_: float = 0.5) -> Any:
    """LaplaceScheduler: log sigma at the Laplace(mu, beta) quantiles of an even ramp, clamped to the range, then 0."""
    import torch

    ramp = torch.linspace(0, 1, steps)
    centred = 0.5 - ramp
    log_sigma = mu - beta_ * torch.sign(centred) * torch.log(1 - 2 * centred.abs() + 1e-5)
    return _zero_appended(log_sigma.clamp(min=math.log(sigma_min), max=math.log(sigma_max)).exp())


def vp(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> Any:
    """VPScheduler: the continuous VP SDE's sigma(t) = sqrt(e^(beta_d t^2 / 2 + beta_min t) - 1), t from 1 to eps_s."""
    import torch

    t = torch.linspace(1, eps_s, steps)
    return _zero_appended(torch.sqrt(torch.exp(beta_d * t ** 2 / 2 + beta_min * t) - 1))


def manual(text: str) -> Any:
    """ManualSigmas: every number written in ``text`` (commas, spaces or anything else between them)."""
    import re

    import torch

    values = [float(v) for v in re.findall(r"[-+]?(?:\d*\.*\d+)", text)]
    return torch.tensor(values, dtype=torch.float32)


_SPACINGS = {"linear": lambda r: r, "cosine": lambda r: (r * math.pi / 2).sin(),
             "sine": lambda r: 1 - (r * math.pi / 2).cos()}


def extend_intermediate(sigmas: Any, steps: int, start_at_sigma: float, end_at_sigma: float, spacing: str) -> Any:
    """ExtendIntermediateSigmas: ``steps - 1`` levels inserted in each step whose level lies in
    [end_at_sigma, start_at_sigma] (start < 0: no upper bound), spaced by ``spacing`` (linear, cosine, sine)."""
    import torch

    if spacing not in _SPACINGS:
        raise ValueError(f"spacing {spacing!r}: choose one of {', '.join(_SPACINGS)}")
    upper = math.inf if start_at_sigma < 0 else start_at_sigma
    ramp = _SPACINGS[spacing](torch.linspace(0, 1, steps + 1)[1:-1])
    out: list[float] = []
    for i in range(len(sigmas) - 1):
        here, nxt = float(sigmas[i]), float(sigmas[i + 1])
        out.append(here)
        if end_at_sigma <= here <= upper:
            out.extend((ramp * (nxt - here) + here).tolist())
    if len(sigmas) > 0:
        out.append(float(sigmas[-1]))
    return torch.tensor(out, dtype=torch.float32)


def percent_to_sigma(model: DiffusionModel, percent: float, actual: bool = False) -> float:
    """The model's noise level ``percent`` of the way through sampling (ComfyUI's percent_to_sigma: training
    timestep ``(1 - percent) * 999`` interpolated in log sigma); at 0 and 1 a sentinel (999999999.9, 0) unless
    ``actual``, which gives the model's largest and smallest noise level there."""
    import numpy as np

    flow = getattr(model, "flow", None)
    if getattr(model, "family", "unet") != "unet" and flow is not None:
        if actual and percent in (0.0, 1.0):  # the ends of the model's own table (flow, SVD's EDM, Cosmos)
            table = flow.table()
            return float(table[-1] if percent == 0.0 else table[0])
        return flow.percent_to_sigma(percent)
    train = np.asarray(training_sigmas(model), dtype=np.float64)
    if actual and percent == 0.0:
        return float(train[-1])
    if actual and percent == 1.0:
        return float(train[0])
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    t = min(max((1.0 - percent) * 999.0, 0.0), len(train) - 1)
    low = math.floor(t)
    high = min(low + 1, len(train) - 1)
    w = t - low
    return float(math.exp((1 - w) * math.log(train[low]) + w * math.log(train[high])))
