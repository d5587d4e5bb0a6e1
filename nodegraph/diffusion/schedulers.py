"""ComfyUI's sampler_name × scheduler values: which run on diffusers scheduler classes, and the sigma schedules.

``SAMPLER_NAMES``/``SCHEDULER_NAMES`` are ComfyUI's lists in its order. Every pair runs: ``route`` gives the
diffusers ``Plan`` where a diffusers class expresses the pair faithfully (``SAMPLERS`` says which class and options
run a sampler, ``SCHEDULES`` how a schedule is expressed; ``PAIRS`` is their table, a Plan or why not), and None
otherwise: those pairs run the k-diffusion-convention sampler of ``ksamplers`` on ``reference_sigmas`` (KSampler
does so through ``custom.k_route``). ``comfy_sigmas`` is ComfyUI's BasicScheduler (with denoise).

How a schedule is expressed, best first (``_resolve``):
1. the class's own flags when they give ComfyUI's schedule: ``use_karras_sigmas``/``use_exponential_sigmas``
   (with "linspace": the SD config's "leading" shifts them by 40%), or a ``timestep_spacing`` the class spaces as
   ComfyUI does ("linspace" = normal, "trailing" = simple, "leading" = ddim_uniform on the Euler family; the
   variance-preserving multistep solvers space "linspace" and "leading" differently, up to 143 of 1000 off);
2. ComfyUI's schedule computed here (``reference_sigmas``) and handed over: ``set_timesteps(sigmas=…)`` (Euler),
   ``timesteps=`` (Heun takes fractional ones; DPM++ multistep, DDPM and LCM integers), or for classes without
   either (UniPC, DEIS, SA-Solver, Euler ancestral, LMS) ``override_schedule`` after ``set_timesteps(N)``;
3. sgm_uniform only: "trailing" spacing, within one of the 1000 training timesteps.
Integer-timestep classes round computed schedules to the nearest timestep (as their own karras flags do);
linear_quadratic crowds its first half within a few timesteps, so it needs fractional timesteps.
Measured against ComfyUI's formulas (SD1.5 betas, 8 and 20 steps): every supported pair within one timestep,
those taking fractional schedules within 0.05 (tests/diffusion/test_schedulers.py). ddim_uniform follows
diffusers' "leading" spacing; ComfyUI adds one step there when the step count does not divide 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Mapping

Space = Literal["k", "vp"]
#: How set_timesteps takes a computed schedule: sigmas=; timesteps= (fractional or rounded to integers); or, for
#: classes without either, "override": set_timesteps(N) then replace the ``timesteps``/``sigmas`` attributes.
Custom = Literal["sigmas", "timesteps_float", "timesteps", "override_float", "override", None]
_ALL = ("linspace", "leading", "trailing")


@dataclass(frozen=True)
class SamplerSpec:
    """A diffusers scheduler class standing for a ComfyUI sampler, and what the class can express."""

    cls: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: "k": the sample is x0 + sigma*noise (Euler family); "vp": sqrt(a)*x0 + sqrt(1-a)*noise (DDIM, DPM++ …).
    space: Space = "k"
    sigma_flags: bool = True  # use_karras_sigmas / use_exponential_sigmas exist
    custom: Custom = None
    #: timestep_spacing values that give ComfyUI's schedule on this class (linspace=normal, trailing=simple,
    #: leading=ddim_uniform); the VP multistep solvers space "linspace" and "leading" differently.
    spacings: tuple[str, ...] = _ALL
    note: str = ""


_DPMPP = "DPMSolverMultistepScheduler"
_MULTI = {"space": "vp", "spacings": ("trailing",)}
#: Read-only: plugins add samplers through their engine's table (``custom.SamplerRegistry``), never here.
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType({
    "euler": SamplerSpec("EulerDiscreteScheduler", custom="sigmas"),
    "euler_ancestral": SamplerSpec("EulerAncestralDiscreteScheduler", sigma_flags=False, custom="override_float"),
    "heun": SamplerSpec("HeunDiscreteScheduler", custom="timesteps_float"),
    "dpm_2": SamplerSpec("KDPM2DiscreteScheduler"),
    "dpm_2_ancestral": SamplerSpec("KDPM2AncestralDiscreteScheduler"),
    "lms": SamplerSpec("LMSDiscreteScheduler", custom="override_float"),
    "dpmpp_sde": SamplerSpec("DPMSolverSDEScheduler", note="Brownian-tree noise seeded with the seed"),
    "dpmpp_2m": SamplerSpec(_DPMPP, {"algorithm_type": "dpmsolver++", "solver_order": 2}, custom="timesteps",
                            **_MULTI),
    "dpmpp_2m_sde": SamplerSpec(_DPMPP, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                         "solver_type": "midpoint"}, custom="timesteps", **_MULTI),
    "dpmpp_2m_sde_heun": SamplerSpec(_DPMPP, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2,
                                              "solver_type": "heun"}, custom="timesteps", **_MULTI),
    "dpmpp_3m_sde": SamplerSpec(_DPMPP, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3,
                                         "solver_type": "midpoint"}, custom="timesteps", **_MULTI),
    "ddpm": SamplerSpec("DDPMScheduler", {"clip_sample": False}, "vp", sigma_flags=False, custom="timesteps"),
    "lcm": SamplerSpec("LCMScheduler", {"clip_sample": False}, "vp", sigma_flags=False, custom="timesteps",
                       spacings=()),
    # ComfyUI's "ddim" runs Euler sampling, and deterministic DDIM is the same update; diffusers' DDIMScheduler
    # steps to t - 1000//N whatever the spacing, which is not the next timestep of "linspace" (normal).
    "ddim": SamplerSpec("EulerDiscreteScheduler", custom="sigmas", note="Euler sampling, as ComfyUI's ddim"),
    # diffusers' bh1 update divides by zero on the step to sigma 0 (NaN); it stops at the smallest trained sigma.
    "uni_pc": SamplerSpec("UniPCMultistepScheduler", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"},
                          custom="override", note="ends at sigma_min (bh1 gives NaN stepping to 0)", **_MULTI),
    "uni_pc_bh2": SamplerSpec("UniPCMultistepScheduler", {"solver_type": "bh2"}, custom="override", **_MULTI),
    "deis": SamplerSpec("DEISMultistepScheduler", {}, custom="override", **_MULTI),
    "sa_solver": SamplerSpec("SASolverScheduler", {}, custom="override", **_MULTI),
})

#: ComfyUI samplers that cannot run here, with what to use instead: none (those without a faithful diffusers class
#: run the k-diffusion-convention samplers of ``ksamplers``). Kept for callers that read it.
NO_EQUIVALENT: Mapping[str, str] = MappingProxyType({})

#: ComfyUI's sampler_name list in its order (comfy/samplers.py: KSAMPLER_NAMES, then ddim, uni_pc, uni_pc_bh2).
KSAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0",
    "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece")
SAMPLER_NAMES: tuple[str, ...] = KSAMPLER_NAMES + ("ddim", "uni_pc", "uni_pc_bh2")
#: ComfyUI's KSampler computes these schedules one step longer and drops the next-to-last sigma.
DISCARD_PENULTIMATE_SIGMA: frozenset[str] = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


@dataclass(frozen=True)
class ScheduleSpec:
    """How a ComfyUI scheduler name is expressed: a spacing/flag where the class has it, else computed."""

    spacing: str | None = None  # timestep_spacing giving this schedule (on classes listing it as faithful)
    flag: str | None = None  # use_karras_sigmas / use_exponential_sigmas (with "linspace")
    approx_spacing: str | None = None  # within one timestep, for classes without custom schedules
    fractional: bool = False  # its steps crowd within one integer timestep: needs fractional timesteps


#: ComfyUI's scheduler list, in its order (comfy/samplers.py SCHEDULER_NAMES).
SCHEDULES: Mapping[str, ScheduleSpec] = MappingProxyType({
    "simple": ScheduleSpec(spacing="trailing"),
    "sgm_uniform": ScheduleSpec(approx_spacing="trailing"),
    "karras": ScheduleSpec(flag="use_karras_sigmas"),
    "exponential": ScheduleSpec(flag="use_exponential_sigmas"),
    "ddim_uniform": ScheduleSpec(spacing="leading"),
    "beta": ScheduleSpec(),
    "normal": ScheduleSpec(spacing="linspace"),
    "linear_quadratic": ScheduleSpec(fractional=True),
    "kl_optimal": ScheduleSpec(),
})

SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULES)
_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


@dataclass(frozen=True)
class Plan:
    """How one (sampler, scheduler) pair runs: config overrides and, for computed schedules, how they are passed."""

    sampler: str
    scheduler: str
    config: Mapping[str, Any]  # overrides on top of the checkpoint's scheduler config
    custom: Custom = None  # None: set_timesteps(steps); else pass reference_sigmas() this way
    note: str = ""


def _resolve(sampler: str, schedule: str) -> Plan | None:
    """The rule: the class's own flags when faithful, else a computed schedule it takes, else an approximation."""
    spec, sched = SAMPLERS[sampler], SCHEDULES[schedule]
    base = dict(spec.options, **{f: False for f in _FLAGS if spec.sigma_flags})
    if sched.flag and spec.sigma_flags:
        return Plan(sampler, schedule, dict(base, timestep_spacing="linspace", **{sched.flag: True}), None,
                    "sigmas rounded to integer timesteps" if spec.space == "vp" else spec.note)
    if sched.spacing and sched.spacing in spec.spacings:
        return Plan(sampler, schedule, dict(base, timestep_spacing=sched.spacing), None, spec.note)
    if spec.custom is not None and not (sched.fractional and spec.custom in ("timesteps", "override")):
        rounded = spec.custom in ("timesteps", "override")
        return Plan(sampler, schedule, base, spec.custom,
                    "computed, rounded to integer timesteps" if rounded else "computed" + spec.note)
    if sched.approx_spacing and sched.approx_spacing in spec.spacings:
        return Plan(sampler, schedule, dict(base, timestep_spacing=sched.approx_spacing), None,
                    f"{sched.approx_spacing!r} spacing (within 1 of 1000 timesteps of ComfyUI's {schedule})")
    return None


def _entry(sampler: str, schedule: str) -> Plan | str:
    plan = _resolve(sampler, schedule)
    if plan is not None:
        return plan
    with_sampler = [s for s in SCHEDULES if _resolve(sampler, s)]
    with_schedule = [s for s in SAMPLERS if _resolve(s, schedule)]
    return (f"sampler {sampler!r} with scheduler {schedule!r} cannot be expressed with diffusers' "
            f"{SAMPLERS[sampler].cls}; use {sampler!r} with {', '.join(with_sampler)}, or {schedule!r} with "
            f"{', '.join(with_schedule)}")


#: The diffusers table: every (diffusers-capable sampler, scheduler) pair → its Plan, or why diffusers cannot express
#: it faithfully (that pair then runs the k-diffusion-convention sampler; see ``route``).
PAIRS: dict[tuple[str, str], Plan | str] = {(a, b): _entry(a, b) for a in SAMPLERS for b in SCHEDULES}


def route(sampler: str, scheduler: str) -> Plan | None:
    """The diffusers Plan running (sampler, scheduler) faithfully, or None: run ``ksamplers.k_sampler(sampler)`` on
    ``reference_sigmas(scheduler, …)`` instead."""
    entry = PAIRS.get((sampler, scheduler))
    return entry if isinstance(entry, Plan) else None


def unsupported_pair(sampler: str, scheduler: str) -> str | None:
    """Why (sampler, scheduler) cannot run here, naming what works instead; None when it can (every pair of
    ComfyUI's names can)."""
    if sampler in NO_EQUIVALENT:
        return f"sampler {sampler!r} cannot run here: {NO_EQUIVALENT[sampler]}"
    if sampler not in SAMPLER_NAMES:
        return f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}"
    if scheduler not in SCHEDULES:
        return f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULES)}"
    return None


def plan_for(sampler: str, scheduler: str) -> Plan:
    """The diffusers Plan of a pair; raises ValueError saying why when the pair has none (unknown names, or a pair
    that runs on the k-diffusion-convention samplers instead)."""
    reason = unsupported_pair(sampler, scheduler)
    if reason:
        raise ValueError(reason)
    entry = PAIRS.get((sampler, scheduler))
    if not isinstance(entry, Plan):
        raise ValueError(entry or f"sampler {sampler!r} has no diffusers scheduler class here; it runs as a "
                         "k-diffusion-convention sampler (nodegraph.diffusion.ksamplers)")
    return entry


# ---- ComfyUI's sigma schedules, computed from the checkpoint's training noise levels -----------------------------

def training_sigmas(alphas_cumprod: Any) -> Any:
    """sigma(t) = sqrt((1 - a_t) / a_t) for t = 0..T-1, as float64 numpy."""
    import numpy as np

    acp = np.asarray(alphas_cumprod, dtype=np.float64)
    return np.sqrt((1.0 - acp) / acp)


def sigma_to_t(sigma: Any, sigmas: Any) -> Any:
    """Fractional training timestep(s) of ``sigma``, interpolating t linearly in log sigma."""
    import numpy as np

    log_s = np.log(sigmas)
    return np.interp(np.log(np.maximum(np.asarray(sigma, dtype=np.float64), 1e-10)), log_s, np.arange(len(sigmas)))


def t_to_sigma(t: Any, sigmas: Any) -> Any:
    """sigma at fractional timestep(s) ``t``, interpolating log sigma linearly in t."""
    import numpy as np

    return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(len(sigmas)), np.log(sigmas)))


def reference_sigmas(schedule: str, steps: int, alphas_cumprod: Any, time_maps: Any = None) -> Any:
    """ComfyUI's sigma schedule ``schedule`` for ``steps`` steps (descending, ending with 0), float64 numpy;
    ``time_maps`` (sigma → model time, model time → sigma; ``model_sampling.time_maps``: ContinuousV) replace the
    interpolation over the table."""
    sig = training_sigmas(alphas_cumprod)
    maps = time_maps or (lambda s: sigma_to_t(s, sig), lambda t: t_to_sigma(t, sig))
    out = schedule_sigmas(schedule, steps, sig, maps[0], maps[1])
    if out is None:
        raise ValueError(f"unknown scheduler {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    return out


def schedule_sigmas(schedule: str, steps: int, table: Any, to_t: Any, to_sigma: Any) -> Any:
    """ComfyUI's scheduler ``schedule`` over a model's sigma table (ascending in timestep) with its sigma → timestep
    and timestep → sigma maps: ``steps + 1`` descending float64 values ending with 0, or None for an unknown name.
    Shared by the discrete (UNet) models and the flow-matching ones, whose tables and maps differ."""
    import numpy as np

    n = len(table)
    smin, smax = float(table[0]), float(table[-1])
    if schedule in ("normal", "sgm_uniform"):
        t_max, t_min = float(to_t(smax)), float(to_t(smin))
        ts = (np.linspace(t_max, t_min, steps + 1)[:-1] if schedule == "sgm_uniform"
              else np.linspace(t_max, t_min, steps))
        out = to_sigma(ts)
    elif schedule == "karras":
        rho = 7.0
        ramp = np.linspace(0, 1, steps)
        out = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    elif schedule == "exponential":
        out = np.exp(np.linspace(math.log(smax), math.log(smin), steps))
    elif schedule == "simple":
        stride = n / steps
        out = np.array([table[-(1 + int(i * stride))] for i in range(steps)])
    elif schedule == "ddim_uniform":
        stride = max(n // steps, 1)
        out = table[np.arange(1, n, stride)][::-1]
    elif schedule == "beta":
        from scipy import stats

        ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * (n - 1))
        ts = ts[np.concatenate([[True], ts[1:] != ts[:-1]])]
        out = table[ts.astype(np.int64)]
    elif schedule == "linear_quadratic":
        out = _linear_quadratic(steps) * smax
    elif schedule == "kl_optimal":
        frac = np.arange(steps, dtype=np.float64) / max(steps - 1, 1)
        out = np.tan(frac * math.atan(smin) + (1 - frac) * math.atan(smax))
    else:
        return None
    return np.concatenate([np.asarray(out, dtype=np.float64), [0.0]])


def alphas_cumprod_of(source: Any) -> Any:
    """The training alphas_cumprod (float64 numpy) of a diffusers scheduler config mapping, or ``source`` itself
    when it already is the array."""
    import numpy as np

    if isinstance(source, Mapping):
        import diffusers

        from .model_sampling import sampling_kind, sigma_table

        if sampling_kind(source) == "continuous":  # the exact table, not one rebuilt from float32 betas
            return 1.0 / (sigma_table(source) ** 2 + 1.0)
        config = {k: v for k, v in dict(source).items() if not k.startswith("_")}
        return diffusers.DDPMScheduler.from_config(config).alphas_cumprod.numpy().astype(np.float64)
    return np.asarray(source, dtype=np.float64)


def comfy_sigmas(scheduler: str, steps: int, source: Any, denoise: float = 1.0) -> Any:
    """ComfyUI's BasicScheduler: ``steps`` + 1 sigmas (float64 numpy, descending, ending with 0) of ``scheduler``
    for a model given by its diffusers scheduler config (a mapping) or its alphas_cumprod; with ``denoise`` < 1
    the schedule of int(steps / denoise) steps is computed and its last steps + 1 values returned; denoise 0
    gives an empty array."""
    import numpy as np

    if scheduler not in SCHEDULES:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULES)}")
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return np.zeros(0, dtype=np.float64)
        total = int(steps / denoise)
    return reference_sigmas(scheduler, total, alphas_cumprod_of(source), maps_of_source(source))[-(steps + 1):]


def maps_of_source(source: Any) -> Any:
    """The time maps of a model given by its scheduler config (None for alphas_cumprod or the usual tables)."""
    from .model_sampling import time_maps

    return time_maps(source) if isinstance(source, Mapping) else None


def _linear_quadratic(steps: int, threshold: float = 0.025) -> Any:
    """Noise fraction going 1 → 0: linear for the first half of the steps, then quadratic (ending with 0)."""
    import numpy as np

    if steps == 1:
        return np.array([1.0])
    lin = steps // 2
    quad = steps - lin
    diff = lin - threshold * steps
    qa = diff / (lin * quad ** 2)
    qb = threshold / lin - 2 * diff / quad ** 2
    qc = qa * lin ** 2
    done = [i * threshold / lin for i in range(lin)] + [qa * i * i + qb * i + qc for i in range(lin, steps)]
    return 1.0 - np.array(done)


# ---- building a configured diffusers scheduler -----------------------------------------------------------------

def build_scheduler(sampler: str, scheduler: str, scheduler_config: Mapping[str, Any], steps: int,
                    seed: int = 0) -> Any:
    """A diffusers scheduler for the pair, its timesteps set for ``steps`` steps (ValueError if unsupported)."""
    import diffusers
    import numpy as np

    plan = plan_for(sampler, scheduler)
    spec = SAMPLERS[sampler]
    cls = getattr(diffusers, spec.cls)
    config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    config.update(plan.config)
    if steps == 1 and config.get("timestep_spacing") == "linspace":
        # diffusers' linspace puts a single step at timestep 0 (np.linspace(0, 999, 1)); ComfyUI's one-step
        # normal schedule starts at sigma_max, which "trailing" gives (timestep 999)
        config["timestep_spacing"] = "trailing"
    if spec.cls == "DPMSolverSDEScheduler":
        config["noise_sampler_seed"] = int(seed) % (2**63)
    sched = cls.from_config(config)
    if plan.custom is None:
        sched.set_timesteps(steps)
        return sched
    sigmas = reference_sigmas(scheduler, steps, sched.alphas_cumprod.numpy())
    if plan.custom == "sigmas":
        sched.set_timesteps(sigmas=sigmas.astype("float32").tolist())
        return sched
    train = training_sigmas(sched.alphas_cumprod.numpy())
    ts = sigma_to_t(sigmas[:-1], train)
    if plan.custom in ("timesteps", "override"):
        ts = np.rint(ts).astype(np.int64)
        ts = ts[np.concatenate([[True], ts[1:] < ts[:-1]])]  # strictly descending
    if plan.custom.startswith("timesteps"):
        sched.set_timesteps(timesteps=ts.tolist())
        return sched
    if plan.custom == "override_float":
        override_schedule(sched, ts.astype(np.float32), sigmas.astype(np.float32))
    else:
        override_schedule(sched, ts, np.append(train[ts], 0.0).astype(np.float32), keep_last=True)
    return sched


def override_schedule(sched: Any, timesteps: Any, sigmas: Any, keep_last: bool = False) -> None:
    """Give a class without custom schedules ``timesteps`` (N) and ``sigmas`` (N+1): reset it for N steps with
    ``set_timesteps`` (its solver state), then replace both arrays. ``keep_last`` keeps the class's final sigma."""
    import torch

    sched.set_timesteps(len(timesteps))
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).clone()
    if keep_last:
        sigmas[-1] = sched.sigmas[-1]
    sched.timesteps = torch.as_tensor(timesteps).to(sched.timesteps.dtype)
    sched.sigmas = sigmas
