"""Model patches: guidance rescaling, FreeU, PerpNeg, self-attention guidance, differential diffusion, discrete model sampling.

Each node returns a copy of the MODEL with the patch recorded (weights shared; nothing is mutated); the patch acts
while that model samples, in KSampler and custom sampling alike (see ``nodegraph.diffusion.patches``).
"""

from __future__ import annotations

from typing import Any

from nodegraph.api import (COMPUTE_DTYPES, CONTINUOUS_SAMPLINGS, CONTINUOUS_V_SAMPLINGS, DISCRETE_SAMPLINGS, Boolean,
                           Combo, Float, Int, Link, Node, Output, PerpNegGuider, continuous_config, derive,
                           discrete_config, hookimpl, model_patches, with_compute_dtype, with_patch)


def _unet_only(ctx: Any, model: Any, node: str) -> Any:
    loaded = ctx.models.get(model)
    if getattr(loaded, "family", "unet") != "unet":
        raise ValueError(f"{node}: this MODEL is a {loaded.family} flow-matching model; {node} applies to the UNet "
                         "families (SD1.x, SD2.x, SDXL) only: remove the node for this model")
    return loaded


class ModelSamplingDiscrete(Node):
    """Change how the model's predictions are read (eps, v_prediction, lcm, x0, img_to_img), optionally with a
    zero-terminal-SNR noise schedule."""

    CATEGORY = "advanced/model"
    INPUTS = {
        "model": Link("MODEL"),
        "sampling": Combo(list(DISCRETE_SAMPLINGS), tooltip="eps: noise prediction; v_prediction; lcm: distilled "
                          "LCM sampling; x0: the clean latent; img_to_img: x0 from the unscaled noisy latent"),
        "zsnr": Boolean(False, tooltip="rescale the schedule to zero terminal SNR (ComfyUI's)"),
    }
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, sampling, zsnr):
        loaded = _unet_only(ctx, model, "ModelSamplingDiscrete")
        return (derive(model, scheduler_config=discrete_config(loaded.scheduler_config, sampling, bool(zsnr))),)


def _continuous(ctx: Any, model: Any, node: str, sampling: str, sigma_min: float, sigma_max: float,
                *kind: str) -> Any:
    """``model`` sampling continuous noise levels (``kind`` "v": ContinuousV's time), errors naming ``node``."""
    loaded = _unet_only(ctx, model, node)
    try:
        config = continuous_config(loaded.scheduler_config, sampling, float(sigma_min), float(sigma_max), *kind)
    except ValueError as exc:
        raise ValueError(f"{node}: {exc}") from None
    return derive(model, scheduler_config=config)


class ModelSamplingContinuousEDM(Node):
    """Sample with continuous EDM noise levels between sigma_min and sigma_max (CosXL and other EDM-trained UNets)."""

    CATEGORY = "advanced/model"
    INPUTS = {
        "model": Link("MODEL"),
        "sampling": Combo(list(CONTINUOUS_SAMPLINGS), tooltip="how the model's output is read: v_prediction (CosXL), "
                          "edm (sigma_data 0.5) or eps; edm_playground_v2.5 and cosmos_rflow are refused"),
        "sigma_max": Float(120.0, min=0.0, max=1000.0, step=0.001, round=False),  # type: ignore[arg-type]
        "sigma_min": Float(0.002, min=0.0, max=1000.0, step=0.001, round=False),  # type: ignore[arg-type]
    }
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, sampling, sigma_max, sigma_min):
        return (_continuous(ctx, model, "ModelSamplingContinuousEDM", sampling, sigma_min, sigma_max),)


class ModelSamplingContinuousV(Node):
    """Sample with continuous v-prediction noise levels between sigma_min and sigma_max, the model called at time
    atan(sigma)·2/π (ComfyUI's ContinuousV models)."""

    CATEGORY = "advanced/model"
    INPUTS = {
        "model": Link("MODEL"),
        "sampling": Combo(list(CONTINUOUS_V_SAMPLINGS)),
        "sigma_max": Float(500.0, min=0.0, max=1000.0, step=0.001, round=False),  # type: ignore[arg-type]
        "sigma_min": Float(0.03, min=0.0, max=1000.0, step=0.001, round=False),  # type: ignore[arg-type]
    }
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, sampling, sigma_max, sigma_min):
        return (_continuous(ctx, model, "ModelSamplingContinuousV", sampling, sigma_min, sigma_max, "v"),)


class ModelComputeDtype(Node):
    """Compute the model in another dtype while it samples (weights are not converted for good; narrower dtypes
    run as per-operation casts)."""

    CATEGORY = "advanced/debug/model"
    INPUTS = {"model": Link("MODEL"), "dtype": Combo(list(COMPUTE_DTYPES))}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, dtype):
        loaded = ctx.models.get(model)
        return (derive(model, scheduler_config=with_compute_dtype(loaded.scheduler_config, dtype)),)


class RescaleCFG(Node):
    """Rescale classifier-free guidance towards the positive prediction's spread (less over-saturation at high
    cfg; meant for v-prediction models)."""

    CATEGORY = "advanced/model"
    INPUTS = {"model": Link("MODEL"), "multiplier": Float(0.7, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, multiplier):
        _unet_only(ctx, model, "RescaleCFG")
        return (with_patch(model, model_patches.RescaleCFG(float(multiplier))),)


class PerpNeg(Node):
    """Perp-Neg guidance: the empty prompt as the base and only the part of the negative perpendicular to the
    positive pushed away from (use PerpNegGuider for new graphs)."""

    DISPLAY_NAME = "Perp-Neg (DEPRECATED by PerpNegGuider)"
    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"), "empty_conditioning": Link("CONDITIONING"),
              "neg_scale": Float(1.0, min=0.0, max=100.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, empty_conditioning, neg_scale):
        _unet_only(ctx, model, "PerpNeg")
        return (with_patch(model, model_patches.PerpNeg(list(empty_conditioning), float(neg_scale))),)


class PerpNegGuiderNode(Node):
    """A guider with Perp-Neg guidance from positive, negative and an empty prompt."""

    NAME = "PerpNegGuider"
    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"), "positive": Link("CONDITIONING"), "negative": Link("CONDITIONING"),
              "empty_conditioning": Link("CONDITIONING"),
              "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              "neg_scale": Float(1.0, min=0.0, max=100.0, step=0.01)}
    OUTPUTS = (Output("GUIDER"),)

    def execute(self, ctx, model, positive, negative, empty_conditioning, cfg, neg_scale):
        _unet_only(ctx, model, "PerpNegGuider")
        return (PerpNegGuider(model, list(positive), list(negative), list(empty_conditioning), float(cfg),
                              float(neg_scale)),)


class SelfAttentionGuidance(Node):
    """Self-attention guidance: blur where the negative's middle-block attention looks and guide away from the
    blurred prediction."""

    DISPLAY_NAME = "Self-Attention Guidance"
    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"), "scale": Float(0.5, min=-2.0, max=5.0, step=0.01),
              "blur_sigma": Float(2.0, min=0.0, max=10.0, step=0.1)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, scale, blur_sigma):
        _unet_only(ctx, model, "SelfAttentionGuidance")
        return (with_patch(model, model_patches.SelfAttentionGuidance(float(scale), float(blur_sigma))),)


def _freeu_inputs(b1: float, b2: float) -> dict[str, Any]:
    return {"model": Link("MODEL"), "b1": Float(b1, min=0.0, max=10.0, step=0.01),
            "b2": Float(b2, min=0.0, max=10.0, step=0.01), "s1": Float(0.9, min=0.0, max=10.0, step=0.01),
            "s2": Float(0.2, min=0.0, max=10.0, step=0.01)}


class FreeU(Node):
    """FreeU: amplify the UNet's backbone features (b1, b2) and damp the low frequencies of its skip features
    (s1, s2) in the up blocks."""

    CATEGORY = "model_patches/unet"
    INPUTS = _freeu_inputs(1.1, 1.2)
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, b1, b2, s1, s2):
        _unet_only(ctx, model, "FreeU")
        return (with_patch(model, model_patches.FreeU(float(b1), float(b2), float(s1), float(s2), 1)),)


class FreeU_V2(Node):  # noqa: N801 - ComfyUI's class name
    """FreeU version 2: the backbone scaling follows each position's normalised mean activation."""

    CATEGORY = "model_patches/unet"
    INPUTS = _freeu_inputs(1.3, 1.4)
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, b1, b2, s1, s2):
        _unet_only(ctx, model, "FreeU_V2")
        return (with_patch(model, model_patches.FreeU(float(b1), float(b2), float(s1), float(s2), 2)),)


class DifferentialDiffusion(Node):
    """Differential diffusion: a soft inpainting mask sets how early each pixel starts changing (its value is the
    fraction of the steps that may change it)."""

    DISPLAY_NAME = "Differential Diffusion"
    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"), "strength": Float(1.0, min=0.0, max=1.0, step=0.01, optional=True)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, strength=1.0):
        _unet_only(ctx, model, "DifferentialDiffusion")
        return (with_patch(model, model_patches.DifferentialDiffusion(float(strength))),)


class TomePatchModel(Node):
    """Token merging (ToMe): merge a ratio of the similar tokens in the full-resolution self-attentions, for
    speed at large sizes."""

    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"), "ratio": Float(0.3, min=0.0, max=1.0, step=0.01)}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, ratio):
        _unet_only(ctx, model, "TomePatchModel")
        return (with_patch(model, model_patches.TokenMerging(float(ratio))),)


class FourierScale:
    """FreSca's filter: the spatial frequencies within ``cutoff`` of the centre (after fftshift) of every spatial
    axis scaled by ``low``, all others by ``high``."""

    def __init__(self, low: float, high: float, cutoff: int) -> None:
        self.low, self.high, self.cutoff = low, high, cutoff

    def __call__(self, latent: Any, **_: Any) -> Any:
        import torch

        x = latent.float()
        spatial = tuple(range(2, x.dim()))
        freq = torch.fft.fftshift(torch.fft.fftn(x, dim=spatial), dim=spatial)
        inside = torch.ones(x.shape[2:], dtype=torch.bool, device=x.device)
        for axis, size in enumerate(x.shape[2:]):
            centre, half = size // 2, min(self.cutoff, size // 2)
            band = torch.zeros(size, dtype=torch.bool, device=x.device)
            band[centre - half:centre + half] = True
            inside &= band.view(*[-1 if i == axis else 1 for i in range(len(spatial))])
        scale = torch.where(inside, torch.tensor(self.low), torch.tensor(self.high)).to(x.device)
        out = torch.fft.ifftn(torch.fft.ifftshift(freq * scale, dim=spatial), dim=spatial).real
        return out.to(latent.dtype)


class FreSca(Node):
    """Frequency-dependent scaling of the guidance (FreSca): its low and high spatial frequencies scaled apart."""

    CATEGORY = "_for_testing"
    INPUTS = {"model": Link("MODEL"),
              "scale_low": Float(1.0, min=0.0, max=10.0, step=0.01,
                                 tooltip="Scaling factor for low-frequency components"),
              "scale_high": Float(1.25, min=0.0, max=10.0, step=0.01,
                                  tooltip="Scaling factor for high-frequency components"),
              "freq_cutoff": Int(20, min=1, max=10000, step=1,
                                 tooltip="Number of frequency indices around center to consider as low-frequency")}
    OUTPUTS = (Output("MODEL"),)

    def execute(self, ctx, model, scale_low: float, scale_high: float, freq_cutoff: int):
        op = FourierScale(float(scale_low), float(scale_high), int(freq_cutoff))
        return (with_patch(model, model_patches.LatentOperationCFG(op, guidance_only=True)),)


@hookimpl
def nodegraph_nodes():
    """The model patch nodes."""
    return [ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingContinuousV, ModelComputeDtype, RescaleCFG, PerpNeg, PerpNegGuiderNode, SelfAttentionGuidance, FreeU, FreeU_V2,
            DifferentialDiffusion, TomePatchModel, FreSca]
