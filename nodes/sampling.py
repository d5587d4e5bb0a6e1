"""Sampling nodes: KSampler and KSamplerAdvanced, on diffusers schedulers (see nodegraph.diffusion.schedulers)."""

from __future__ import annotations

from typing import Any

from nodegraph.api import (Combo, Float, Int, Link, Node, Output, hookimpl, sample, sampler_names, scheduler_names,
                           unsupported_pair)

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _pair_errors(config: Any, constants: dict[str, Any]) -> list[tuple[str, str]]:
    sampler, scheduler = constants.get("sampler_name"), constants.get("scheduler")
    if sampler is None or scheduler is None:
        return []
    reason = unsupported_pair(config, sampler, scheduler)
    return [("scheduler", reason)] if reason else []


def _run(ctx: Any, model: Any, positive: list, negative: list, latent_image: dict, **options: Any) -> dict:
    return dict(sample(ctx, model, positive, negative, latent_image, **options))  # type: ignore[arg-type]


_COMMON = {
    "steps": Int(20, min=1, max=10000, step=None, tooltip="the number of denoising steps"),
    "cfg": Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                 tooltip="classifier-free guidance scale: how strongly the prompt steers the image"),
    "sampler_name": Combo(sampler_names, tooltip="the sampling algorithm (ComfyUI's list, then any a plugin adds)"),
    "scheduler": Combo(scheduler_names, tooltip="how the noise levels are spaced over the steps"),
    "positive": Link("CONDITIONING", tooltip="what to include in the image"),
    "negative": Link("CONDITIONING", tooltip="what to exclude from the image"),
    "latent_image": Link("LATENT", tooltip="the latent image to denoise"),
}


class KSampler(Node):
    """Denoise a latent image with a model, guided by positive and negative conditioning."""

    CATEGORY = "sampling"
    INPUTS = {
        "model": Link("MODEL", tooltip="the model used to denoise"),
        "seed": Int(0, min=0, max=SEED_MAX, step=None, control_after_generate=True, tooltip="the seed of the noise"),
        **{k: _COMMON[k] for k in ("steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                   "latent_image")},
        "denoise": Float(1.0, min=0.0, max=1.0, step=0.01,
                         tooltip="how much to denoise: below 1 keeps part of the input latent (img2img)"),
    }
    OUTPUTS = (Output("LATENT", tooltip="the denoised latent"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        return _pair_errors(config, constants)

    def execute(self, ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise=1.0):
        return (_run(ctx, model, positive, negative, latent_image, sampler_name=sampler_name,
                     scheduler=scheduler, steps=steps, cfg=cfg, seed=seed, denoise=denoise),)


class KSamplerAdvanced(Node):
    """KSampler with control over noise and the range of steps run (for multi-stage sampling)."""

    DISPLAY_NAME = "KSampler (Advanced)"
    CATEGORY = "sampling"
    INPUTS = {
        "model": Link("MODEL"),
        "add_noise": Combo(["enable", "disable"], tooltip="add the seed's noise to the latent first"),
        "noise_seed": Int(0, min=0, max=SEED_MAX, step=None, control_after_generate=True),
        **{k: _COMMON[k] for k in ("steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                   "latent_image")},
        "start_at_step": Int(0, min=0, max=10000, step=None, tooltip="the first step to run"),
        "end_at_step": Int(10000, min=0, max=10000, step=None, tooltip="the step to stop at"),
        "return_with_leftover_noise": Combo(["disable", "enable"],
                                            tooltip="when stopping early, keep the remaining noise"),
    }
    OUTPUTS = (Output("LATENT"),)

    @classmethod
    def validate_inputs(cls, config, **constants):
        return _pair_errors(config, constants)

    def execute(self, ctx, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        return (_run(ctx, model, positive, negative, latent_image, sampler_name=sampler_name,
                     scheduler=scheduler, steps=steps, cfg=cfg, seed=noise_seed, add_noise=add_noise == "enable",
                     start_at_step=start_at_step, end_at_step=end_at_step,
                     return_with_leftover_noise=return_with_leftover_noise == "enable"),)


@hookimpl
def nodegraph_nodes():
    """The sampling nodes."""
    return [KSampler, KSamplerAdvanced]
