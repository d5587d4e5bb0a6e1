"""Samplers and schedules added by plugins, and the per-engine table that lists them beside the built-in ones.

The built-in samplers are ComfyUI's whole list: diffusers scheduler classes where one runs a pair faithfully
(``schedulers.route``), else the k-diffusion-convention functions of ``ksamplers``. A plugin sampler is a plain
function in the same convention: it receives a ``Denoiser`` (the model with guidance applied, returning the
clean-latent estimate x0 for a noisy latent ``x`` at noise level ``sigma``), the starting latent already noised to
``sigmas[0]`` and the descending sigma schedule ending with 0, and returns the final latent. A plugin schedule is a
function ``(steps, training_sigmas) -> sigmas`` returning ``steps + 1`` descending values that end with 0.

Plugins declare them at module level (no hook needed)::

    NODEGRAPH_SAMPLERS = [api.SamplerDef("my_euler", my_euler, "Euler with a twist")]
    NODEGRAPH_SCHEDULERS = [api.ScheduleDef("my_schedule", my_schedule)]

``SamplerRegistry.from_plugins`` reads those declarations from the plugins of one ``Registry``; each engine keeps
its own table (no process-wide list), and KSampler's combos list what the table holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from . import schedulers

if TYPE_CHECKING:
    import numpy as np
    import torch

#: callback(step, total, x0 estimate) after each step; the engine turns it into progress + a preview image.
StepCallback = Callable[[int, int, "torch.Tensor"], None]
#: (steps, training sigmas ascending in t) -> steps + 1 descending sigmas ending with 0.
ScheduleFn = Callable[[int, "np.ndarray"], "np.ndarray"]


class Denoiser(Protocol):
    """The model as a plugin sampler sees it: ``denoiser(x, sigma)`` is the guided clean-latent estimate."""

    #: The positive CONDITIONING entries as the graph gave them ((embeddings, extras) pairs; extras carry hints).
    conditioning: list[tuple[Any, dict[str, Any]]]
    #: The classifier-free guidance scale.
    cfg: float

    def __call__(self, x: "torch.Tensor", sigma: float) -> "torch.Tensor":
        """x0 estimate with classifier-free guidance applied."""
        ...

    def split(self, x: "torch.Tensor", sigma: float) -> "tuple[torch.Tensor, torch.Tensor | None]":
        """(positive x0, negative x0 or None when cfg is 1): for samplers that guide in their own way."""
        ...


class SamplerFn(Protocol):
    """A plugin sampler: integrate from ``sigmas[0]`` to ``sigmas[-1]`` (0) and return the final latent."""

    def __call__(self, denoiser: Denoiser, x: "torch.Tensor", sigmas: "torch.Tensor", *,
                 generator: "torch.Generator", callback: StepCallback) -> "torch.Tensor":
        """Run the sampler; call ``callback(i + 1, len(sigmas) - 1, x0)`` after each step."""
        ...


@dataclass(frozen=True)
class SamplerDef:
    """A plugin sampler: its combo name, the function and a one-line description."""

    name: str
    fn: SamplerFn
    description: str = ""


@dataclass(frozen=True)
class ScheduleDef:
    """A plugin schedule (ComfyUI's "scheduler"): its combo name and the function computing the sigmas."""

    name: str
    fn: ScheduleFn
    description: str = ""


@dataclass
class SamplerRegistry:
    """The samplers and schedules one engine offers: the built-in diffusers table plus plugin ones."""

    samplers: dict[str, SamplerDef] = field(default_factory=dict)
    schedules: dict[str, ScheduleDef] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # "sampler:name" -> plugin that added it

    def __reduce__(self) -> Any:
        """Pickles as an empty table: each process's engine builds its own from its own plugins."""
        return (type(self), ())

    def add_sampler(self, sampler: SamplerDef, plugin: str = "") -> None:
        """Add a plugin sampler; raises ValueError naming the clash when the name is taken."""
        self._check_name(sampler.name, "sampler", set(schedulers.SAMPLER_NAMES) | set(self.samplers))
        if not callable(sampler.fn):
            raise TypeError(f"sampler {sampler.name!r}: fn is not callable; give a function (denoiser, x, sigmas, *, "
                            "generator, callback) -> latent")
        self.samplers[sampler.name] = sampler
        self.origin[f"sampler:{sampler.name}"] = plugin

    def add_schedule(self, schedule: ScheduleDef, plugin: str = "") -> None:
        """Add a plugin schedule; raises ValueError naming the clash when the name is taken."""
        self._check_name(schedule.name, "scheduler", set(schedulers.SCHEDULES) | set(self.schedules))
        if not callable(schedule.fn):
            raise TypeError(f"scheduler {schedule.name!r}: fn is not callable; give a function (steps, "
                            "training_sigmas) -> sigmas")
        self.schedules[schedule.name] = schedule
        self.origin[f"scheduler:{schedule.name}"] = plugin

    def _check_name(self, name: str, kind: str, taken: set[str]) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"a {kind} needs a non-empty name")
        if name in taken:
            by = self.origin.get(f"{kind}:{name}") or "nodegraph"
            raise ValueError(f"{kind} {name!r} is already provided by {by}; choose another name")

    def sampler_names(self) -> list[str]:
        """Built-in sampler names, then plugin ones (KSampler's sampler_name combo)."""
        return list(schedulers.SAMPLER_NAMES) + list(self.samplers)

    def scheduler_names(self) -> list[str]:
        """Built-in schedule names, then plugin ones (KSampler's scheduler combo)."""
        return list(schedulers.SCHEDULER_NAMES) + list(self.schedules)

    def unsupported_pair(self, sampler: str, scheduler: str) -> str | None:
        """Why (sampler, scheduler) cannot run, naming what works instead; None when it can."""
        if sampler in self.samplers:
            if scheduler in schedulers.SCHEDULES or scheduler in self.schedules:
                return None
            return f"unknown scheduler {scheduler!r}; choose one of: {', '.join(self.scheduler_names())}"
        if scheduler in self.schedules:
            if sampler in schedulers.SAMPLER_NAMES:
                return (f"scheduler {scheduler!r} (from {self.origin.get('scheduler:' + scheduler) or 'a plugin'}) "
                        f"runs with plugin samplers only; use one of: {', '.join(self.samplers) or '(none loaded)'}")
        if sampler not in schedulers.SAMPLER_NAMES:
            return f"unknown sampler {sampler!r}; choose one of: {', '.join(self.sampler_names())}"
        if scheduler not in schedulers.SCHEDULES:
            return f"unknown scheduler {scheduler!r}; choose one of: {', '.join(self.scheduler_names())}"
        return schedulers.unsupported_pair(sampler, scheduler)

    def function(self, sampler: str) -> SamplerFn:
        """The k-diffusion-convention function of ``sampler``: a plugin's, or the built-in one of ``ksamplers``
        (KSamplerSelect offers every name); ValueError naming the choices when unknown."""
        if sampler in self.samplers:
            return self.samplers[sampler].fn
        if sampler in schedulers.SAMPLER_NAMES:
            from .ksamplers import k_sampler

            return k_sampler(sampler)
        raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(self.sampler_names())}")

    def schedule(self, scheduler: str, steps: int, source: Any, denoise: float = 1.0) -> Any:
        """ComfyUI's BasicScheduler for a built-in or plugin schedule: steps + 1 sigmas (float64 numpy) for a model
        given by its diffusers scheduler config or alphas_cumprod, the tail of int(steps / denoise) when denoise < 1
        (empty at denoise 0)."""
        import numpy as np

        if scheduler not in self.schedules:
            return schedulers.comfy_sigmas(scheduler, steps, source, denoise)
        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return np.zeros(0, dtype=np.float64)
            total = int(steps / denoise)
        return self.sigmas(scheduler, total, schedulers.alphas_cumprod_of(source),
                           schedulers.maps_of_source(source))[-(steps + 1):]

    def sigmas(self, scheduler: str, steps: int, alphas_cumprod: Any, time_maps: Any = None) -> Any:
        """The sigma schedule (steps + 1 values ending with 0, float64 numpy) of a built-in or plugin schedule;
        ``time_maps``: the model's own sigma ↔ time maps (``model_sampling.time_maps``) for ComfyUI's schedules."""
        import numpy as np

        if scheduler in self.schedules:
            out = np.asarray(self.schedules[scheduler].fn(steps, schedulers.training_sigmas(alphas_cumprod)),
                             dtype=np.float64)
            if out.shape != (steps + 1,) or out[-1] != 0.0 or np.any(np.diff(out) > 0):
                raise ValueError(f"scheduler {scheduler!r} returned {out.shape[0]} sigmas; it must return "
                                 f"steps + 1 = {steps + 1} descending values ending with 0")
            return out
        return schedulers.reference_sigmas(scheduler, steps, alphas_cumprod, time_maps)

    @classmethod
    def from_declarations(cls, plugins: Iterable[tuple[str, Any]]) -> tuple["SamplerRegistry", list[tuple[str, str]]]:
        """A table from (plugin name, module) pairs' ``NODEGRAPH_SAMPLERS``/``NODEGRAPH_SCHEDULERS``; also returns
        (plugin, error) pairs for declarations that were refused."""
        table = cls()
        errors: list[tuple[str, str]] = []
        for name, module in plugins:
            for attr, add in (("NODEGRAPH_SAMPLERS", table.add_sampler), ("NODEGRAPH_SCHEDULERS", table.add_schedule)):
                for item in getattr(module, attr, None) or ():
                    try:
                        if not isinstance(item, (SamplerDef, ScheduleDef)):
                            raise TypeError(f"{attr} holds {item!r}; use nodegraph.api.SamplerDef/ScheduleDef")
                        add(item, name)  # type: ignore[operator]
                    except (TypeError, ValueError) as exc:
                        errors.append((name, f"{attr}: {exc}"))
        return table, errors

    @classmethod
    def from_plugins(cls, registry: Any) -> "SamplerRegistry":
        """The table of one ``Registry``'s plugins (in load order); refusals become that plugin's errors."""
        pairs = [(name, registry.pm.get_plugin(name)) for name in list(registry.plugins)]
        table, errors = cls.from_declarations((n, m) for n, m in pairs if m is not None)
        for plugin, message in errors:
            info = registry.plugins.get(plugin)
            if info is not None and message not in info.errors:
                info.errors.append(message)
        return table


class KDenoiser:
    """``Denoiser`` over a diffusers UNet in k-diffusion form: x = x0 + sigma * noise, sigma from the training betas.

    ``active`` (``patches.Active``, set by the run) applies the MODEL's sampling patches: guidance hooks on the
    positive/negative estimates and the per-step inpainting mask.
    """

    def __init__(self, model: Any, conds: list, unconds: list, conditioning: list, cfg: float, dtype: Any,
                 mask: Any = None, clean: Any = None) -> None:
        import torch

        from .model_sampling import special_of
        from .sampling import _sigma_table

        self.model, self.conds, self.unconds, self.dtype = model, conds, unconds, dtype
        self.conditioning, self.cfg = conditioning, float(cfg)
        self.mask, self.clean = mask, clean
        self.train = _sigma_table(model.scheduler_config)
        self.special = special_of(model.scheduler_config)
        self.active: Any = None
        self.encode: Any = None  # CONDITIONING -> device entries (PerpNeg's empty prompt), set with ``active``
        self._torch = torch

    def _x0(self, x: Any, out: Any, sigma: float) -> Any:
        if self.special is not None:
            return self.special.denoised(x, out, sigma, self.train)
        kind = self.model.prediction_type
        if kind == "sample":
            return out
        if kind == "v_prediction":
            return x / (sigma * sigma + 1) - out * (sigma / (sigma * sigma + 1) ** 0.5)
        return x - sigma * out

    def _eval(self, x: Any, sigma: float, conds: list, unconds: list) -> Any:
        """(positive x0, negative x0 or None) before the inpainting blend."""
        from .sampling import side_predictions

        t = None if self.special is None else self.special.timestep(float(sigma), self.train)
        if t is None:
            t = float(schedulers.sigma_to_t(max(float(sigma), 1e-10), self.train))
        c_in = 1.0 / (float(sigma) ** 2 + 1.0) ** 0.5 if self.special is None else self.special.c_in(float(sigma))
        ts = self._torch.tensor(t, dtype=self._torch.float32, device=x.device)
        pos, neg = side_predictions(self.model.unet, x * c_in, ts, conds, unconds, self.dtype)
        return self._x0(x, pos, float(sigma)), (None if neg is None else self._x0(x, neg, float(sigma)))

    def split(self, x: Any, sigma: float) -> Any:
        """(positive x0, negative x0 or None) at noise level ``sigma``."""
        cond, neg = self._eval(x, sigma, self.conds, self.unconds)
        return self._blend(cond), (None if neg is None else self._blend(neg))

    def _blend(self, x0: Any, mask: Any = None) -> Any:
        mask = self.mask if mask is None else mask
        return x0 if mask is None else mask * x0 + (1.0 - mask) * self.clean

    def __call__(self, x: Any, sigma: float) -> Any:
        if self.active is not None:
            return self._patched(x, sigma)
        cond, uncond = self.split(x, sigma)
        return cond if uncond is None else uncond + self.cfg * (cond - uncond)

    def _patched(self, x: Any, sigma: float) -> Any:
        """The guided x0 with the MODEL's patches (guidance on the raw estimates, then the step's mask)."""
        from .patches import Step

        self.active.before_eval()
        cond, uncond = self._eval(x, sigma, self.conds, self.unconds)
        step = Step(x, float(sigma), self.cfg, cond, uncond, lambda xx, entries: self._eval(xx, sigma, entries, [])[0],
                    self.unconds, self.encode)
        out = self.active.guide(step)
        if self.mask is None:
            return out
        return self._blend(out, self.active.mask(self.mask, float(sigma)))


@dataclass
class _KRoute(SamplerRegistry):
    """One run's view of an engine's table holding the built-in k-diffusion sampler it runs, computing its sigmas as
    ComfyUI's KSampler does (one step longer, next-to-last dropped, for DISCARD_PENULTIMATE_SIGMA samplers)."""

    discard: bool = False

    def sigmas(self, scheduler: str, steps: int, alphas_cumprod: Any, time_maps: Any = None) -> Any:
        """The sigma schedule, with ComfyUI's KSampler adjustment for this sampler."""
        import numpy as np

        if not self.discard:
            return super().sigmas(scheduler, steps, alphas_cumprod, time_maps)
        out = super().sigmas(scheduler, steps + 1, alphas_cumprod, time_maps)
        return np.concatenate([out[:-2], out[-1:]])


def k_route(table: SamplerRegistry | None, sampler: str, scheduler: str,
            force: bool = False) -> SamplerRegistry | None:
    """How KSampler runs (sampler, scheduler): ``table`` unchanged when a plugin sampler or a faithful diffusers plan
    runs it; else (or always with ``force``: a model with no diffusers scheduler form) a view of ``table`` that holds
    the built-in k-diffusion-convention sampler under its name (run like a plugin sampler, on ComfyUI's sigmas)."""
    base = table if table is not None else SamplerRegistry()
    if sampler in base.samplers or sampler not in schedulers.SAMPLER_NAMES:
        return table
    if not force and scheduler not in base.schedules and schedulers.route(sampler, scheduler) is not None:
        return table
    from .ksamplers import k_sampler

    view = _KRoute(dict(base.samplers), dict(base.schedules), dict(base.origin),
                   discard=sampler in schedulers.DISCARD_PENULTIMATE_SIGMA)
    view.samplers[sampler] = SamplerDef(sampler, k_sampler(sampler), "built-in k-diffusion-convention sampler")
    return view


def samplers_of(config: Any) -> SamplerRegistry:
    """The engine's sampler table, reached through its config (built-ins only before an engine installed one)."""
    table = getattr(config, "samplers", None)
    return table if isinstance(table, SamplerRegistry) else SamplerRegistry()


def install_samplers(config: Any, registry: Any) -> SamplerRegistry:
    """Build the table of ``registry``'s plugins and attach it to the engine's ``config`` (what combos receive)."""
    table = SamplerRegistry.from_plugins(registry)
    if config is not None:
        config.samplers = table
    return table
