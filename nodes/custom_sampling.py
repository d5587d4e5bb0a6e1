"""Custom sampling nodes (ComfyUI's SamplerCustom family): samplers, sigmas, noise and guiders as links.

SamplerCustomAdvanced runs a SAMPLER (KSamplerSelect) over SIGMAS (a scheduler node, cut with SplitSigmas …) from
NOISE (RandomNoise draws what KSampler draws for the same seed; DisableNoise none) with a GUIDER (CFGGuider,
BasicGuider, DualCFGGuider: a model and its conditionings); it returns the sampled latent and the model's last
clean estimate (denoised_output).
"""

from __future__ import annotations

from nodegraph.api import BasicGuider as BasicGuiderValue
from nodegraph.api import Boolean, Combo, EmptyNoise, Float, Int, Link, Node, Output, add_noise, hookimpl
from nodegraph.api import CFGGuider as CFGGuiderValue
from nodegraph.api import DualCFGGuider as DualCFGGuiderValue
from nodegraph.api import RandomNoise as RandomNoiseValue
from nodegraph.api import (model_sigmas, run_custom, sampler_by_name, sampler_names, sampler_problem, scheduler_names,
                           sigma_schedules)

from .sampler_options import NODES as OPTION_NODES

SEED_MAX = 0xFFFFFFFFFFFFFFFF
SIGMA_MAX, SIGMA_MIN = 14.614642, 0.0291675  # SD1.x's noise range: the default of the model-free schedulers


def _cfg(default: float = 8.0) -> Float:
    return Float(default, min=0.0, max=100.0, step=0.1, round=0.01)


def _sigma(default: float) -> Float:
    return Float(default, min=0.0, max=5000.0, step=0.01, round=False)  # type: ignore[arg-type]


_LATENT_OUTPUTS = (Output("LATENT", "output", tooltip="the sampled latent"),
                   Output("LATENT", "denoised_output", tooltip="the model's clean estimate at the last step"))


# ---- samplers and sigmas ------------------------------------------------------------------------------------------

class KSamplerSelect(Node):
    """A sampler by name, for SamplerCustom and SamplerCustomAdvanced."""

    CATEGORY = "sampling/samplers"
    INPUTS = {"sampler_name": Combo(sampler_names, tooltip="the sampling algorithm")}
    OUTPUTS = (Output("SAMPLER"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        name = constants.get("sampler_name")
        problem = sampler_problem(config, name) if name is not None else None
        return [("sampler_name", problem)] if problem else []

    def execute(self, ctx, sampler_name):
        return (sampler_by_name(ctx, sampler_name),)


class BasicScheduler(Node):
    """The model's noise levels for a scheduler and a number of steps (the last ``steps`` of ``steps / denoise``)."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"model": Link("MODEL"), "scheduler": Combo(scheduler_names),
              "steps": Int(20, min=1, max=10000, step=None), "denoise": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, model, scheduler, steps, denoise):
        return (model_sigmas(ctx, model, scheduler, steps, denoise),)


class KarrasScheduler(Node):
    """Karras et al.'s noise levels between sigma_max and sigma_min."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None), "sigma_max": _sigma(SIGMA_MAX),
              "sigma_min": _sigma(SIGMA_MIN),
              "rho": Float(7.0, min=0.0, max=100.0, step=0.01, round=False)}  # type: ignore[arg-type]
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps, sigma_max, sigma_min, rho):
        return (sigma_schedules.karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """Noise levels evenly spaced in log sigma between sigma_max and sigma_min."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None), "sigma_max": _sigma(SIGMA_MAX),
              "sigma_min": _sigma(SIGMA_MIN)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps, sigma_max, sigma_min):
        return (sigma_schedules.exponential(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(Node):
    """Noise levels spaced in log sigma by a power rho of the step ramp."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None), "sigma_max": _sigma(SIGMA_MAX),
              "sigma_min": _sigma(SIGMA_MIN),
              "rho": Float(1.0, min=0.0, max=100.0, step=0.01, round=False)}  # type: ignore[arg-type]
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps, sigma_max, sigma_min, rho):
        return (sigma_schedules.polyexponential(steps, sigma_min, sigma_max, rho),)


class BetaSamplingScheduler(Node):
    """The model's noise levels at the quantiles of a Beta(alpha, beta) distribution over its timesteps."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"model": Link("MODEL"), "steps": Int(20, min=1, max=10000, step=None),
              "alpha": Float(0.6, min=0.0, max=50.0, step=0.01, round=False),  # type: ignore[arg-type]
              "beta": Float(0.6, min=0.0, max=50.0, step=0.01, round=False)}  # type: ignore[arg-type]
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, model, steps, alpha, beta):
        return (sigma_schedules.beta(ctx.models.get(model), steps, alpha, beta),)


class SDTurboScheduler(Node):
    """SD-Turbo's few-step noise levels (timesteps 999, 899, …), starting later for denoise below 1."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"model": Link("MODEL"), "steps": Int(1, min=1, max=10, step=None),
              "denoise": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, model, steps, denoise):
        return (sigma_schedules.sd_turbo(ctx.models.get(model), steps, denoise),)


class SplitSigmas(Node):
    """Split the noise levels at a step: high_sigmas runs first, low_sigmas continues (they share that level)."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"sigmas": Link("SIGMAS"), "step": Int(0, min=0, max=10000, step=None)}
    OUTPUTS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, ctx, sigmas, step):
        return sigma_schedules.split(sigmas, step)


class SplitSigmasDenoise(Node):
    """Split the noise levels so that low_sigmas holds the last ``denoise`` fraction of the steps."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"sigmas": Link("SIGMAS"), "denoise": Float(1.0, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def execute(self, ctx, sigmas, denoise):
        return sigma_schedules.split_denoise(sigmas, denoise)


class FlipSigmas(Node):
    """Reverse the noise levels (to run from clean to noisy, e.g. for inversion); a first 0 becomes 0.0001."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"sigmas": Link("SIGMAS")}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, sigmas):
        return (sigma_schedules.flip(sigmas),)


class SetFirstSigma(Node):
    """Replace the first noise level."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"sigmas": Link("SIGMAS"),
              "sigma": Float(136.0, min=0.0, max=20000.0, step=0.001, round=False)}  # type: ignore[arg-type]
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, sigmas, sigma):
        return (sigma_schedules.set_first(sigmas, sigma),)


# ---- noise ----------------------------------------------------------------------------------------------------------

class RandomNoise(Node):
    """The seed's noise, drawn exactly as KSampler draws it."""

    CATEGORY = "sampling/noise"
    INPUTS = {"noise_seed": Int(0, min=0, max=SEED_MAX, step=None, control_after_generate=True)}
    OUTPUTS = (Output("NOISE"),)

    def execute(self, ctx, noise_seed):
        return (RandomNoiseValue(int(noise_seed)),)


class DisableNoise(Node):
    """No noise: sample the latent as it is (it already holds its noise)."""

    CATEGORY = "sampling/noise"
    INPUTS: dict = {}
    OUTPUTS = (Output("NOISE"),)

    def execute(self, ctx):
        return (EmptyNoise(),)


class AddNoise(Node):
    """Add the noise to a latent, scaled to the noise level the sigmas span."""

    CATEGORY = "experimental/custom_sampling/noise"
    INPUTS = {"model": Link("MODEL"), "noise": Link("NOISE"), "sigmas": Link("SIGMAS"),
              "latent_image": Link("LATENT")}
    OUTPUTS = (Output("LATENT"),)

    def execute(self, ctx, model, noise, sigmas, latent_image):
        return (add_noise(ctx, model, noise, sigmas, latent_image),)


# ---- guiders ----------------------------------------------------------------------------------------------------

class CFGGuider(Node):
    """Classifier-free guidance: the model steered toward positive and away from negative by cfg."""

    DISPLAY_NAME = "CFG Guider"
    CATEGORY = "sampling/guiders"
    INPUTS = {"model": Link("MODEL"), "positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"),
              "cfg": _cfg()}
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, ctx, model, positive, negative, cfg):
        return (CFGGuiderValue(model, list(positive), list(negative), float(cfg)),)


class BasicGuider(Node):
    """The model's prediction for one conditioning, without a negative or guidance scale."""

    DISPLAY_NAME = "Basic Guider"
    CATEGORY = "sampling/guiders"
    INPUTS = {"model": Link("MODEL"), "conditioning": Link("CONDITIONING")}
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, ctx, model, conditioning):
        return (BasicGuiderValue(model, list(conditioning)),)


class DualCFGGuider(Node):
    """Guidance by two conditionings: toward cond2 and away from negative, and from cond2 toward cond1."""

    DISPLAY_NAME = "Dual CFG Guider"
    CATEGORY = "sampling/guiders"
    INPUTS = {"model": Link("MODEL"), "cond1": Link("CONDITIONING"), "cond2": Link("CONDITIONING"),
              "negative": Link("CONDITIONING"), "cfg_conds": _cfg(), "cfg_cond2_negative": _cfg(),
              "style": Combo(["regular", "nested"])}
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, ctx, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style):
        return (DualCFGGuiderValue(model, list(cond1), list(cond2), list(negative), float(cfg_conds),
                                  float(cfg_cond2_negative), style == "nested"),)


# ---- samplers ---------------------------------------------------------------------------------------------------

class SamplerCustom(Node):
    """Sample a latent with a chosen sampler and noise levels, guided by positive and negative at cfg."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = {"model": Link("MODEL"), "add_noise": Boolean(True), "noise_seed":
              Int(0, min=0, max=SEED_MAX, step=None, control_after_generate=True), "cfg": _cfg(),
              "positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"), "sampler": Link("SAMPLER"),
              "sigmas": Link("SIGMAS"), "latent_image": Link("LATENT")}
    OUTPUTS = _LATENT_OUTPUTS

    def execute(self, ctx, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        noise = RandomNoiseValue(int(noise_seed)) if add_noise else EmptyNoise()
        guider = CFGGuiderValue(model, list(positive), list(negative), float(cfg))
        return run_custom(ctx, guider, sampler, sigmas, noise, latent_image)


class SamplerCustomAdvanced(Node):
    """Sample a latent from noise with a guider, a sampler and noise levels, each chosen by its own node."""

    CATEGORY = "sampling/custom_sampling"
    INPUTS = {"noise": Link("NOISE"), "guider": Link("GUIDER"), "sampler": Link("SAMPLER"),
              "sigmas": Link("SIGMAS"), "latent_image": Link("LATENT")}
    OUTPUTS = _LATENT_OUTPUTS

    def execute(self, ctx, noise, guider, sampler, sigmas, latent_image):
        return run_custom(ctx, guider, sampler, sigmas, noise, latent_image)


@hookimpl
def nodegraph_types():
    """The custom sampling link types."""
    return {
        "SAMPLER": "a sampling algorithm (k-diffusion convention) chosen by KSamplerSelect",
        "SIGMAS": "descending noise levels, a 1-D float tensor (the last is 0 to end clean)",
        "NOISE": "a source of starting noise for a latent (RandomNoise, DisableNoise)",
        "GUIDER": "a model with its conditionings and guidance scales (CFGGuider, BasicGuider, DualCFGGuider)",
    }


@hookimpl
def nodegraph_nodes():
    """The custom sampling nodes."""
    return [SamplerCustom, SamplerCustomAdvanced, KSamplerSelect, BasicScheduler, KarrasScheduler,
            ExponentialScheduler, PolyexponentialScheduler, BetaSamplingScheduler, SDTurboScheduler, SplitSigmas,
            SplitSigmasDenoise, FlipSigmas, SetFirstSigma, RandomNoise, DisableNoise, AddNoise, CFGGuider,
            BasicGuider, DualCFGGuider, *OPTION_NODES]
