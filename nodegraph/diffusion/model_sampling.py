"""ComfyUI's ModelSamplingDiscrete expressed through a MODEL's diffusers ``scheduler_config``, so the diffusers
schedulers and the k-diffusion path (``custom.KDenoiser``, ``sampling._sigma_table``) both honour it.

- eps / v_prediction / x0: ``prediction_type`` epsilon / v_prediction / sample.
- zsnr: ComfyUI's zero-terminal-SNR rescale of the training sigmas (its last alphas_cumprod is 4.8973451890853435e-08,
  not diffusers' 0 or 2**-24), written as ``trained_betas`` that reproduce those alphas_cumprod.
- lcm: ComfyUI's distilled LCM sampling: 50 of the training sigmas (every T/50-th, ending at T-1), the UNet called at
  timestep ``index · skip + skip - 1`` of the nearest of them, and LCM's boundary condition on the output.
- img_to_img: x0 prediction from the unscaled noisy latent (no 1/sqrt(sigma² + 1) input scaling).

ModelSamplingContinuousEDM (``continuous_config``): sigmas log-spaced between sigma_min and sigma_max (1000 of
them, ComfyUI's table), the UNet called at time 0.25·ln(sigma) on the input scaled by 1/sqrt(sigma² + sigma_data²),
its output read as eps, v or EDM's F with ``sigma_data`` (CosXL: v_prediction, 120/0.002). Every ComfyUI scheduler
over that table equals ComfyUI's: the table is log-linear, so its interpolated index is affine in 0.25·ln(sigma).

ModelSamplingContinuousV (``continuous_config(..., time="v")``): the same log-spaced table, but the model time is
atan(sigma)·2/π and sigma(t) = tan(t·π/2). ComfyUI's normal/sgm_uniform schedules are linear in that time, not in
ln(sigma): ``time_maps(config)`` gives those maps, and the schedule code takes them as an explicit argument
(``schedulers.reference_sigmas(..., time_maps=...)``).

ModelComputeDtype (``with_compute_dtype``): the dtype the MODEL computes in, recorded under a private key that the
other patches keep; ``devices.DeviceManager.for_model`` honours it.

lcm, x0, img_to_img and continuous models sample on the k-diffusion path (KSampler routes them there: ``needs_k_path``). The
config keeps the checkpoint's original under a private key, so a second ModelSamplingDiscrete starts from it, as
ComfyUI's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

SAMPLINGS = ("eps", "v_prediction", "lcm", "x0", "img_to_img")
ZSNR_LAST_ALPHA_CUMPROD = 4.8973451890853435e-08
_KIND = "_nodegraph_sampling"
_ORIGINAL = "_nodegraph_original"
_PREDICTION = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "epsilon", "x0": "sample",
               "img_to_img": "sample"}
LCM_ORIGINAL_STEPS = 50
_COMPUTE = "_nodegraph_compute_dtype"
#: ModelComputeDtype's choices (``default``: the engine's dtype)
COMPUTE_DTYPES = ("default", "fp32", "fp16", "bf16")


def _carried(config: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with the settings of other patches that a new model sampling keeps (the compute dtype)."""
    if config.get(_COMPUTE):
        out[_COMPUTE] = config[_COMPUTE]
    return out


def with_compute_dtype(config: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """The scheduler config of a model patched by ModelComputeDtype(``dtype``)."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}")
    out = {k: v for k, v in config.items() if k != _COMPUTE}
    if dtype != "default":
        out[_COMPUTE] = dtype
    return out


def compute_dtype_of(config: Mapping[str, Any]) -> str | None:
    """The ModelComputeDtype choice recorded in a scheduler config (None: the engine's dtype)."""
    value = config.get(_COMPUTE)
    return str(value) if value else None


def zsnr_alphas_cumprod(alphas_cumprod: Any) -> Any:
    """ComfyUI's zero-terminal-SNR rescale (``rescale_zero_terminal_snr_sigmas``) of training alphas_cumprod."""
    import numpy as np

    sqrt_ab = np.sqrt(np.asarray(alphas_cumprod, dtype=np.float64))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    out = sqrt_ab ** 2
    out[-1] = ZSNR_LAST_ALPHA_CUMPROD
    return out


def _betas(alphas_cumprod: Any) -> list[float]:
    import numpy as np

    acp = np.asarray(alphas_cumprod, dtype=np.float64)
    prev = np.concatenate([[1.0], acp[:-1]])
    return [float(b) for b in 1.0 - acp / prev]


def discrete_config(config: Mapping[str, Any], sampling: str, zsnr: bool) -> dict[str, Any]:
    """The scheduler config of a model patched by ModelSamplingDiscrete(``sampling``, ``zsnr``)."""
    from .schedulers import alphas_cumprod_of

    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    base = dict(config.get(_ORIGINAL) or config)
    public = {k: v for k, v in base.items() if not k.startswith("_")}
    out = dict(public, prediction_type=_PREDICTION[sampling])
    if zsnr or sampling == "lcm":
        acp = alphas_cumprod_of(dict(public, rescale_betas_zero_snr=False))
        if zsnr:
            acp = zsnr_alphas_cumprod(acp)
        if sampling == "lcm":
            total = len(acp)
            skip = total // LCM_ORIGINAL_STEPS
            acp = acp[[total - 1 - x * skip for x in reversed(range(LCM_ORIGINAL_STEPS))]]
            out["num_train_timesteps"] = LCM_ORIGINAL_STEPS
            out[_KIND + "_skip"] = skip
        out["trained_betas"] = _betas(acp)
        out["rescale_betas_zero_snr"] = False
    out[_KIND] = sampling
    out[_ORIGINAL] = base
    return _carried(config, out)


#: ModelSamplingContinuousEDM's ``sampling`` options: (how the output is read, sigma_data), or why not supported
CONTINUOUS_SAMPLINGS: dict[str, tuple[str, float] | str] = {
    "v_prediction": ("v", 1.0), "edm": ("edm", 0.5),
    "edm_playground_v2.5": "it also changes the latent format to Playground v2.5's per-channel mean and std, which "
                           "nodegraph's VAEs do not carry",
    "eps": ("eps", 1.0),
    "cosmos_rflow": "it is Cosmos' rectified-flow sampling, which applies to Cosmos models, not UNets",
}
#: ModelSamplingContinuousV's ``sampling`` options (sigma_data is 1)
CONTINUOUS_V_SAMPLINGS: dict[str, tuple[str, float] | str] = {"v_prediction": ("v", 1.0)}
CONTINUOUS_STEPS = 1000
#: model time of a continuous model: "edm" 0.25·ln(sigma) (ContinuousEDM), "v" atan(sigma)·2/π (ContinuousV)
CONTINUOUS_TIMES = ("edm", "v")


def continuous_config(config: Mapping[str, Any], sampling: str, sigma_min: float, sigma_max: float,
                      time: str = "edm") -> dict[str, Any]:
    """The scheduler config of a model patched by ModelSamplingContinuousEDM(``sampling``, sigma_max, sigma_min),
    or ModelSamplingContinuousV with ``time="v"``."""
    if time not in CONTINUOUS_TIMES:
        raise ValueError(f"time {time!r} is not one of {', '.join(CONTINUOUS_TIMES)}")
    table = CONTINUOUS_V_SAMPLINGS if time == "v" else CONTINUOUS_SAMPLINGS
    how = table.get(sampling)
    if how is None:
        raise ValueError(f"sampling {sampling!r} is not one of {', '.join(table)}")
    if isinstance(how, str):
        raise ValueError(f"sampling {sampling!r} is not supported: {how}; choose v_prediction, edm or eps")
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be above 0 and below sigma_max ({sigma_max})")
    base = dict(config.get(_ORIGINAL) or config)
    public = {k: v for k, v in base.items() if not k.startswith("_")}
    out = dict(public, prediction_type="v_prediction" if how[0] == "v" else "epsilon",
               trained_betas=_betas(1.0 / (continuous_sigmas(sigma_min, sigma_max) ** 2 + 1.0)),
               rescale_betas_zero_snr=False, num_train_timesteps=CONTINUOUS_STEPS)
    out.update({_KIND: "continuous", _KIND + "_output": how[0], _KIND + "_sigma_data": how[1],
                _KIND + "_sigmas": [float(sigma_min), float(sigma_max)], _KIND + "_time": time, _ORIGINAL: base})
    return _carried(config, out)


def v_timestep(sigma: Any) -> Any:
    """ModelSamplingContinuousV's model time of ``sigma``: atan(sigma)·2/π (numpy or float)."""
    import numpy as np

    return np.arctan(sigma) * (2.0 / math.pi)


def v_sigma(t: Any) -> Any:
    """ModelSamplingContinuousV's sigma at model time ``t``: tan(t·π/2) (numpy or float)."""
    import numpy as np

    return np.tan(np.asarray(t, dtype=np.float64) * (math.pi / 2.0))


def time_maps(config: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """(sigma → model time, model time → sigma) of a model whose time is not its table's interpolated index (the
    continuous-V one), else None (the usual log-sigma interpolation over the table)."""
    if sampling_kind(config) == "continuous" and config.get(_KIND + "_time") == "v":
        return v_timestep, v_sigma
    return None


def continuous_sigmas(sigma_min: float, sigma_max: float) -> Any:
    """ComfyUI's continuous table: CONTINUOUS_STEPS sigmas evenly spaced in ln(sigma), ascending, float64 numpy."""
    import numpy as np

    return np.exp(np.linspace(math.log(sigma_min), math.log(sigma_max), CONTINUOUS_STEPS))


def sigma_table(scheduler_config: Mapping[str, Any]) -> Any:
    """The training sigmas (ascending in t) of a model's scheduler config, float64 numpy: ModelSamplingContinuousEDM's
    exact log-spaced table, else the one its betas give."""
    import diffusers

    from .schedulers import training_sigmas

    bounds = scheduler_config.get(_KIND + "_sigmas")
    if bounds:
        return continuous_sigmas(float(bounds[0]), float(bounds[1]))
    config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    return training_sigmas(diffusers.DDPMScheduler.from_config(config).alphas_cumprod.numpy())


def sampling_kind(config: Mapping[str, Any]) -> str | None:
    """The ModelSamplingDiscrete choice recorded in a scheduler config (None when never patched)."""
    kind = config.get(_KIND)
    return str(kind) if kind else None


def needs_k_path(config: Mapping[str, Any]) -> bool:
    """Whether the model must sample in k-diffusion form (lcm, x0, img_to_img have no diffusers scheduler form)."""
    return sampling_kind(config) in ("lcm", "x0", "img_to_img", "continuous")


@dataclass(frozen=True)
class Special:
    """How a k-diffusion denoiser calls a model whose sampling has no diffusers form (lcm, img_to_img)."""

    kind: str
    skip: int = 1
    output: str = ""  # continuous: "eps", "v" or "edm"
    sigma_data: float = 1.0
    time: str = "edm"  # continuous: "edm" 0.25·ln(sigma), "v" atan(sigma)·2/π

    def timestep(self, sigma: float, table: Any) -> float | None:
        """The UNet timestep at ``sigma`` (None: the usual interpolated one)."""
        if self.kind == "continuous":
            return math.atan(sigma) * 2.0 / math.pi if self.time == "v" else 0.25 * math.log(max(sigma, 1e-10))
        if self.kind != "lcm":
            return None
        from .patches import timestep_index

        return float(timestep_index(sigma, table) * self.skip + self.skip - 1)

    def c_in(self, sigma: float) -> float:
        """The input scaling at ``sigma``."""
        if self.kind == "continuous":
            return 1.0 / math.sqrt(sigma * sigma + self.sigma_data ** 2)
        return 1.0 if self.kind == "img_to_img" else 1.0 / math.sqrt(sigma * sigma + 1.0)

    def denoised(self, x: Any, out: Any, sigma: float, table: Any) -> Any:
        """x0 from the UNet output (LCM: the consistency boundary condition on the epsilon estimate)."""
        if self.kind == "img_to_img":
            return out
        if self.kind == "continuous":
            if self.output == "eps":
                return x - out * sigma
            sd2, s2 = self.sigma_data ** 2, sigma * sigma
            sign = -1.0 if self.output == "v" else 1.0  # v: minus the output; EDM's F: plus
            return x * (sd2 / (s2 + sd2)) + sign * out * (sigma * self.sigma_data / math.sqrt(s2 + sd2))
        from .patches import timestep_index

        t = float(timestep_index(sigma, table) * self.skip + self.skip - 1)
        x0 = x - out * sigma
        st = t * 10.0  # LCM's timestep_scaling
        c_skip = 0.25 / (st * st + 0.25)
        c_out = st / (st * st + 0.25) ** 0.5
        return c_out * x0 + c_skip * x


def special_of(config: Mapping[str, Any]) -> Special | None:
    """The ``Special`` calling convention of a patched config, or None for the ordinary ones."""
    kind = sampling_kind(config)
    if kind == "lcm":
        return Special("lcm", int(config.get(_KIND + "_skip", 20)))
    if kind == "img_to_img":
        return Special("img_to_img")
    if kind == "continuous":
        return Special("continuous", output=str(config.get(_KIND + "_output", "eps")),
                       sigma_data=float(config.get(_KIND + "_sigma_data", 1.0)),
                       time=str(config.get(_KIND + "_time", "edm")))
    return None
