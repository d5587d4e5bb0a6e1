"""ComfyUI's sampler option nodes and the model-free schedules of custom sampling (the custom_sampling pack lists them).

Each Sampler* node makes a SAMPLER running one of the built-in k-diffusion samplers with its options fixed (eta,
s_noise, the solver variant, …), as KSamplerSelect makes one with the defaults; ``noise_device`` picks the ``_gpu``
form, whose noise is drawn on the model's device. The schedulers and sigma tools make SIGMAS.
"""

from __future__ import annotations

from nodegraph.api import Boolean, Combo, Float, Int, Link, Node, Output, String
from nodegraph.api import model_percent_sigma, sampler_with_options, sigma_schedules

_SAMPLERS = "sampling/samplers"
_NOISE_DEVICE = Combo(["gpu", "cpu"])


def _f(default: float, lo: float = 0.0, hi: float = 100.0, step: float = 0.01, tooltip: str | None = None) -> Float:
    return Float(default, min=lo, max=hi, step=step, round=False, tooltip=tooltip)  # type: ignore[arg-type]


def _toggle() -> Boolean:
    """A BOOLEAN stating no default, as ComfyUI's SamplerSASolver toggles (the editor starts them at false)."""
    return Boolean(False).model_copy(update={"default": None})


def _sigma(default: float) -> Float:
    return _f(default, hi=5000.0)


class SamplerEulerAncestral(Node):
    """Euler ancestral with its noise amount (eta) and noise scale (s_noise)."""

    CATEGORY = _SAMPLERS
    INPUTS = {"eta": _f(1.0), "s_noise": _f(1.0)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, eta, s_noise):
        return (sampler_with_options("euler_ancestral", eta=float(eta), s_noise=float(s_noise)),)


class SamplerEulerAncestralCFGPP(Node):
    """Euler ancestral with CFG++ (the step follows the unconditional noise estimate)."""

    DISPLAY_NAME = "SamplerEulerAncestralCFG++"
    CATEGORY = _SAMPLERS
    INPUTS = {"eta": _f(1.0, hi=1.0), "s_noise": _f(1.0, hi=10.0)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, eta, s_noise):
        return (sampler_with_options("euler_ancestral_cfg_pp", eta=float(eta), s_noise=float(s_noise)),)


class SamplerLMS(Node):
    """Linear multistep of a chosen order."""

    CATEGORY = _SAMPLERS
    INPUTS = {"order": Int(4, min=1, max=100, step=None)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, order):
        return (sampler_with_options("lms", order=int(order)),)


class SamplerDPMPP_3M_SDE(Node):
    """DPM-Solver++(3M) SDE with its eta, s_noise and noise device."""

    CATEGORY = _SAMPLERS
    INPUTS = {"eta": _f(1.0), "s_noise": _f(1.0), "noise_device": _NOISE_DEVICE}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, eta, s_noise, noise_device):
        return (sampler_with_options("dpmpp_3m_sde", eta=float(eta), s_noise=float(s_noise),
                                     on_device=noise_device == "gpu"),)


class SamplerDPMPP_2M_SDE(Node):
    """DPM-Solver++(2M) SDE with its second-order correction (midpoint or heun), eta, s_noise and noise device."""

    CATEGORY = _SAMPLERS
    INPUTS = {"solver_type": Combo(["midpoint", "heun"]), "eta": _f(1.0), "s_noise": _f(1.0),
              "noise_device": _NOISE_DEVICE}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, solver_type, eta, s_noise, noise_device):
        return (sampler_with_options("dpmpp_2m_sde", eta=float(eta), s_noise=float(s_noise), solver_type=solver_type,
                                     on_device=noise_device == "gpu"),)


class SamplerDPMPP_SDE(Node):
    """DPM-Solver++ SDE with its eta, s_noise, intermediate point r and noise device."""

    CATEGORY = _SAMPLERS
    INPUTS = {"eta": _f(1.0), "s_noise": _f(1.0), "r": _f(0.5), "noise_device": _NOISE_DEVICE}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, eta, s_noise, r, noise_device):
        if r <= 0:
            raise ValueError("r: the intermediate point must be above 0; use 0.5")
        return (sampler_with_options("dpmpp_sde", eta=float(eta), s_noise=float(s_noise), r=float(r),
                                     on_device=noise_device == "gpu"),)


class SamplerDPMPP_2S_Ancestral(Node):
    """DPM-Solver++(2S) ancestral with its eta and s_noise."""

    CATEGORY = _SAMPLERS
    INPUTS = {"eta": _f(1.0), "s_noise": _f(1.0)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, eta, s_noise):
        return (sampler_with_options("dpmpp_2s_ancestral", eta=float(eta), s_noise=float(s_noise)),)


class SamplerDPMAdaptative(Node):
    """DPM-Solver adaptive: order, tolerances, first step, PID controller and ancestral noise."""

    CATEGORY = _SAMPLERS
    INPUTS = {"order": Int(3, min=2, max=3, step=None), "rtol": _f(0.05), "atol": _f(0.0078), "h_init": _f(0.05),
              "pcoeff": _f(0.0), "icoeff": _f(1.0), "dcoeff": _f(0.0), "accept_safety": _f(0.81), "eta": _f(0.0),
              "s_noise": _f(1.0)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, order, rtol, atol, h_init, pcoeff, icoeff, dcoeff, accept_safety, eta, s_noise):
        if h_init <= 0:
            raise ValueError("h_init: the first step must be above 0; use 0.05")
        return (sampler_with_options("dpm_adaptive", order=int(order), rtol=float(rtol), atol=float(atol),
                                     h_init=float(h_init), pcoeff=float(pcoeff), icoeff=float(icoeff),
                                     dcoeff=float(dcoeff), accept_safety=float(accept_safety), eta=float(eta),
                                     s_noise=float(s_noise)),)


class _PowerScaler:
    """The reverse-time SDE's noise scale function sigma^(eta + 1)."""

    def __init__(self, eta: float) -> None:
        self.power = eta + 1.0

    def __call__(self, sigma):
        return sigma ** self.power


class SamplerER_SDE(Node):
    """ER-SDE-Solver: the ER-SDE, a reverse-time SDE of strength eta, or the ODE, up to max_stage stages."""

    CATEGORY = _SAMPLERS
    INPUTS = {"solver_type": Combo(["ER-SDE", "Reverse-time SDE", "ODE"]), "max_stage": Int(3, min=1, max=3, step=None),
              "eta": _f(1.0, tooltip="Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to "
                                     "deterministic ODE. This setting doesn't apply to ER-SDE solver type."),
              "s_noise": _f(1.0)}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, solver_type, max_stage, eta, s_noise):
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        scaler = None if solver_type == "ER-SDE" else _PowerScaler(float(eta))
        return (sampler_with_options("er_sde", s_noise=float(s_noise), max_stage=int(max_stage),
                                     noise_scaler=scaler),)


class SamplerSASolver(Node):
    """SA-Solver: stochastic (strength eta) between two points of the model's sampling, with its orders."""

    CATEGORY = _SAMPLERS
    INPUTS = {"model": Link("MODEL"), "eta": _f(1.0, hi=10.0),
              "sde_start_percent": Float(0.2, min=0.0, max=1.0, step=0.001),
              "sde_end_percent": Float(0.8, min=0.0, max=1.0, step=0.001), "s_noise": _f(1.0),
              "predictor_order": Int(3, min=1, max=6, step=None), "corrector_order": Int(4, min=0, max=6, step=None),
              "use_pece": _toggle(), "simple_order_2": _toggle()}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, model, eta, sde_start_percent, sde_end_percent, s_noise, predictor_order,
                corrector_order, use_pece, simple_order_2):
        if simple_order_2:
            raise ValueError("simple_order_2: the simplified order-2 weights are not implemented here; set it to "
                             "false (the full weights are used)")
        high = model_percent_sigma(ctx, model, float(sde_start_percent))
        low = model_percent_sigma(ctx, model, float(sde_end_percent))
        return (sampler_with_options("sa_solver", predictor_order=int(predictor_order),
                                     corrector_order=int(corrector_order), s_noise=float(s_noise),
                                     use_pece=bool(use_pece), tau_interval=(low, high, float(eta))),)


class SamplerSEEDS2(Node):
    """SEEDS-2 (also exp_heun_2_x0: phi_2, r 1, eta 0; its SDE form with eta 1)."""

    CATEGORY = _SAMPLERS
    INPUTS = {"solver_type": Combo(["phi_1", "phi_2"]), "eta": _f(1.0, tooltip="Stochastic strength"),
              "s_noise": _f(1.0, tooltip="SDE noise multiplier"),
              "r": _f(0.5, lo=0.01, hi=1.0, tooltip="Relative step size for the intermediate stage (c2 node)")}
    OUTPUTS = (Output("SAMPLER"),)

    def execute(self, ctx, solver_type, eta, s_noise, r):
        return (sampler_with_options("seeds_2", eta=float(eta), s_noise=float(s_noise), r=float(r),
                                     solver_type=solver_type),)


# ---- schedules and sigma tools ----------------------------------------------------------------------------------

class LaplaceScheduler(Node):
    """Noise levels at the quantiles of a Laplace distribution over log sigma (dense around e^mu)."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None), "sigma_max": _sigma(14.614642),
              "sigma_min": _sigma(0.0291675), "mu": _f(0.0, lo=-10.0, hi=10.0, step=0.1),
              "beta": _f(0.5, hi=10.0, step=0.1)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps, sigma_max, sigma_min, mu, beta):
        if sigma_min <= 0 or sigma_max <= 0:
            raise ValueError("sigma_min and sigma_max must be above 0 (their logs bound the schedule)")
        return (sigma_schedules.laplace(int(steps), sigma_min, sigma_max, mu, beta),)


class VPScheduler(Node):
    """Noise levels of the continuous variance-preserving SDE (Song et al. 2021)."""

    CATEGORY = "sampling/schedulers"
    INPUTS = {"steps": Int(20, min=1, max=10000, step=None), "beta_d": _sigma(19.9), "beta_min": _sigma(0.1),
              "eps_s": _f(0.001, hi=1.0, step=0.0001)}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, steps, beta_d, beta_min, eps_s):
        return (sigma_schedules.vp(int(steps), beta_d, beta_min, eps_s),)


class ExtendIntermediateSigmas(Node):
    """Insert levels inside each step between end_at_sigma and start_at_sigma (-1: from the top)."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"sigmas": Link("SIGMAS"), "steps": Int(2, min=1, max=100, step=None),
              "start_at_sigma": _f(-1.0, lo=-1.0, hi=20000.0), "end_at_sigma": _f(12.0, hi=20000.0),
              "spacing": Combo(["linear", "cosine", "sine"])}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, sigmas, steps, start_at_sigma, end_at_sigma, spacing):
        return (sigma_schedules.extend_intermediate(sigmas, int(steps), start_at_sigma, end_at_sigma, spacing),)


class SamplingPercentToSigma(Node):
    """The model's noise level at a fraction of the way through sampling."""

    CATEGORY = "sampling/sigmas"
    INPUTS = {"model": Link("MODEL"), "sampling_percent": Float(0.0, min=0.0, max=1.0, step=0.0001),
              "return_actual_sigma": Boolean(False, tooltip="Return the actual sigma value instead of the value used "
                                                            "for interval checks.\nThis only affects results at 0.0 "
                                                            "and 1.0.")}
    OUTPUTS = (Output("FLOAT", "sigma_value"),)

    def execute(self, ctx, model, sampling_percent, return_actual_sigma):
        return (model_percent_sigma(ctx, model, float(sampling_percent), bool(return_actual_sigma)),)


class ManualSigmas(Node):
    """Noise levels typed as numbers (e.g. "14.6, 7, 3, 1, 0")."""

    CATEGORY = "experimental/custom_sampling"
    INPUTS = {"sigmas": String("1, 0.5")}
    OUTPUTS = (Output("SIGMAS"),)

    def execute(self, ctx, sigmas):
        values = sigma_schedules.manual(sigmas)
        if len(values) == 0:
            raise ValueError(f"sigmas: no numbers in {sigmas!r}; write levels such as '14.6, 7, 3, 1, 0'")
        return (values,)


NODES = [SamplerEulerAncestral, SamplerEulerAncestralCFGPP, SamplerLMS, SamplerDPMPP_3M_SDE, SamplerDPMPP_2M_SDE,
         SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver,
         SamplerSEEDS2, LaplaceScheduler, VPScheduler, ExtendIntermediateSigmas, SamplingPercentToSigma, ManualSigmas]
