"""ComfyUI's custom sampling pieces as values on links, and the engine that runs them (SamplerCustomAdvanced).

- SAMPLER (``Sampler``): a named function in the k-diffusion convention (``custom.SamplerFn``) and its options.
- SIGMAS: a 1-D float32 CPU tensor of descending noise levels; the last is 0 when the run should end clean.
- NOISE (``RandomNoise``/``EmptyNoise``): makes the starting noise for a latent; ``RandomNoise`` draws exactly what
  KSampler draws for the same seed (``sampling.make_noise``: one CPU float32 generator, per ``batch_index``), and
  the sampler's own step noise continues from that generator, as KSampler's k-diffusion path does.
- GUIDER (``CFGGuider``, ``BasicGuider``, ``DualCFGGuider``): a MODEL (a handle or a model) with its conditionings
  and guidance scales; it turns into a ``Denoiser`` on the device for one run.

``sample_custom`` follows KSampler's k-diffusion path (``sampling._sample_plugin``): x = x0 + sigmas[0] * noise,
the guided denoiser over the LATENT's noise mask, the known region restored at the last sigma; it also returns the
last x0 estimate (ComfyUI's ``denoised_output``). Empty sigmas return the latent unchanged; a single sigma returns
it noised to that level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from . import patches
from .custom import KDenoiser, SamplerFn
from .sampling import (Callback, _conds, _resize_mask, lora_applied, make_noise, output_latent,
                       prepare_latent)
from .types import DiffusionModel


@dataclass(frozen=True, eq=False)
class Sampler:
    """SAMPLER: a k-diffusion-convention sampler function with its name and fixed options (ComfyUI's KSAMPLER)."""

    name: str
    fn: SamplerFn
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, denoiser: Any, x: Any, sigmas: Any, *, generator: Any, callback: Any) -> Any:
        """Integrate from ``sigmas[0]`` to ``sigmas[-1]``."""
        return self.fn(denoiser, x, sigmas, generator=generator, callback=callback, **dict(self.options))


class NoiseSource(Protocol):
    """NOISE: makes the starting noise for a LATENT; ``seed`` also seeds the sampler's step noise."""

    seed: int

    def generate_noise(self, latent: dict[str, Any]) -> Any:
        """Noise shaped like ``latent["samples"]`` (float32, CPU)."""
        ...


@dataclass(frozen=True)
class RandomNoise:
    """Gaussian noise from ``seed``, drawn as KSampler draws it."""

    seed: int

    def generate_noise(self, latent: dict[str, Any], generator: Any = None) -> Any:
        """The seed's noise for ``latent`` (from ``generator`` when given, else a fresh one seeded with ``seed``)."""
        gen = generator if generator is not None else seeded_generator(self.seed)
        return make_noise(tuple(latent["samples"].shape), gen, latent.get("batch_index"))


@dataclass(frozen=True)
class EmptyNoise:
    """No noise (DisableNoise): zeros; the sampler's step noise uses seed 0, as ComfyUI's."""

    seed: int = 0

    def generate_noise(self, latent: dict[str, Any]) -> Any:
        """Zeros shaped like ``latent["samples"]``."""
        import torch

        return torch.zeros(tuple(latent["samples"].shape), dtype=torch.float32)


def seeded_generator(seed: int) -> Any:
    """A CPU torch generator seeded with ``seed`` (what KSampler uses)."""
    import torch

    return torch.Generator("cpu").manual_seed(int(seed) % (2**64))


def draw_noise(source: Any, latent: dict[str, Any]) -> tuple[Any, Any]:
    """(starting noise, generator for the sampler's step noise) for ``latent`` from a NOISE value."""
    gen = seeded_generator(getattr(source, "seed", 0))
    if isinstance(source, RandomNoise):
        return source.generate_noise(latent, gen), gen
    if not callable(getattr(source, "generate_noise", None)):
        raise TypeError(f"noise: {type(source).__name__} is not a NOISE value; connect RandomNoise or DisableNoise")
    return source.generate_noise(latent).float().cpu(), gen


# ---- guiders -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Guider:
    """GUIDER: a MODEL (handle or model) and what guides its predictions; ``denoiser`` builds it for one run."""

    model: Any

    def denoiser(self, model: DiffusionModel, batch: int, pixel_hw: tuple[int, int], device: Any, dtype: Any,
                 mask: Any = None, clean: Any = None) -> KDenoiser:
        """The guided ``Denoiser`` on ``device`` for a latent batch of ``batch`` at ``pixel_hw`` pixels."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Approximate memory held beyond the model (its conditioning tensors)."""
        total = 0
        for value in vars(self).values():
            if isinstance(value, list):
                for emb, _ in value:
                    total += int(emb.element_size() * emb.numel())
        return total + 256


@dataclass(frozen=True, eq=False)
class CFGGuider(Guider):
    """Classifier-free guidance: negative + cfg * (positive - negative); the negative is skipped at cfg 1."""

    positive: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    cfg: float = 8.0

    def denoiser(self, model: DiffusionModel, batch: int, pixel_hw: tuple[int, int], device: Any, dtype: Any,
                 mask: Any = None, clean: Any = None) -> KDenoiser:
        """KDenoiser over the positive and negative conditionings."""
        conds = _conds(model, self.positive, batch, pixel_hw, device, dtype, "positive")
        skip = self.cfg == 1.0 and not patches.needs_uncond(model)
        unconds = [] if skip else _conds(model, self.negative, batch, pixel_hw, device, dtype, "negative")
        return KDenoiser(model, conds, unconds, list(self.positive), self.cfg, dtype, mask, clean)


@dataclass(frozen=True, eq=False)
class BasicGuider(Guider):
    """The conditioning's prediction alone (no negative, no guidance scale)."""

    conditioning: list = field(default_factory=list)

    def denoiser(self, model: DiffusionModel, batch: int, pixel_hw: tuple[int, int], device: Any, dtype: Any,
                 mask: Any = None, clean: Any = None) -> KDenoiser:
        """KDenoiser over the conditioning at cfg 1."""
        conds = _conds(model, self.conditioning, batch, pixel_hw, device, dtype, "conditioning")
        return KDenoiser(model, conds, [], list(self.conditioning), 1.0, dtype, mask, clean)


@dataclass(frozen=True, eq=False)
class DualCFGGuider(Guider):
    """Two conditionings and a negative (ComfyUI's DualCFGGuider).

    regular: negative + cfg_cond2_negative * (cond2 - negative) + cfg_conds * (cond1 - cond2);
    nested: negative + cfg_cond2_negative * (cond2 + cfg_conds * (cond1 - cond2) - negative).
    """

    cond1: list = field(default_factory=list)
    cond2: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    cfg_conds: float = 8.0
    cfg_cond2_negative: float = 8.0
    nested: bool = False

    def denoiser(self, model: DiffusionModel, batch: int, pixel_hw: tuple[int, int], device: Any, dtype: Any,
                 mask: Any = None, clean: Any = None) -> KDenoiser:
        """A DualDenoiser over the three conditionings."""
        def conds(value: list, what: str) -> list:
            return _conds(model, value, batch, pixel_hw, device, dtype, what)

        skip_mid, skip_neg = dual_skips(self.cfg_conds, self.cfg_cond2_negative, self.nested)
        return DualDenoiser(model, conds(self.cond1, "cond1"), [] if skip_mid else conds(self.cond2, "cond2"),
                            [] if skip_neg else conds(self.negative, "negative"), list(self.cond1),
                            self.cfg_conds, self.cfg_cond2_negative, self.nested, dtype, mask, clean)


def dual_skips(cfg_conds: float, cfg_cond2_negative: float, nested: bool) -> tuple[bool, bool]:
    """(skip cond2, skip the negative): ComfyUI skips the negative at cfg_cond2_negative 1, and then cond2 too at
    cfg_conds 1 (regular style only)."""
    skip_neg = not nested and math.isclose(cfg_cond2_negative, 1.0)
    return skip_neg and math.isclose(cfg_conds, 1.0), skip_neg


def dual_cfg(pos: Any, mid: Any, neg: Any, cfg1: float, cfg2: float, nested: bool) -> tuple[Any, Any]:
    """DualCFGGuider's (guided x0, the unconditional x0 CFG++ samplers see) from the cond1, cond2 (None: skipped)
    and negative (None: skipped) estimates."""
    if mid is None:  # cond2 and the negative skipped (both scales 1)
        return pos, None
    if nested:
        text = mid + cfg1 * (pos - mid)
        return (text if neg is None else neg + cfg2 * (text - neg)), mid
    guided_mid = mid if neg is None else neg + cfg2 * (mid - neg)
    return guided_mid + (pos - mid) * cfg1, neg


class DualDenoiser(KDenoiser):
    """``Denoiser`` of DualCFGGuider: three x0 estimates (cond1, cond2, negative) combined by two scales.

    ``split`` gives (guided, the unconditional estimate ComfyUI's CFG++ samplers see: the negative, or cond2 in the
    nested style) with ``cfg`` 1, so CFG++ samplers (``uncond + cfg * (cond - uncond)``) get the guided estimate.
    """

    def __init__(self, model: Any, conds: list, middle: list, negative: list, conditioning: list, cfg1: float,
                 cfg2: float, nested: bool, dtype: Any, mask: Any = None, clean: Any = None) -> None:
        super().__init__(model, conds, middle, conditioning, 1.0, dtype, mask, clean)
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested
        self._neg = KDenoiser(model, negative, [], conditioning, 1.0, dtype, mask, clean) if negative else None

    def split(self, x: Any, sigma: float) -> Any:
        """(guided x0, the unconditional x0 CFG++ uses, or None) at noise level ``sigma``."""
        pos, mid = super().split(x, sigma)
        neg = self._neg(x, sigma) if self._neg is not None and mid is not None else None
        return dual_cfg(pos, mid, neg, self.cfg1, self.cfg2, self.nested)

    def __call__(self, x: Any, sigma: float) -> Any:
        return self.split(x, sigma)[0]


@dataclass(frozen=True, eq=False)
class PerpNegGuider(Guider):
    """ComfyUI's PerpNegGuider: Perp-Neg guidance (``patches.perp_neg``) from the positive, the negative and an
    empty prompt; the negative is skipped at neg_scale 0, and the empty prompt too when cfg is also 1."""

    positive: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    empty_conditioning: list = field(default_factory=list)
    cfg: float = 8.0
    neg_scale: float = 1.0

    def denoiser(self, model: DiffusionModel, batch: int, pixel_hw: tuple[int, int], device: Any, dtype: Any,
                 mask: Any = None, clean: Any = None) -> KDenoiser:
        """A PerpNegDenoiser over the three conditionings."""
        def conds(value: list, what: str) -> list:
            return _conds(model, value, batch, pixel_hw, device, dtype, what)

        skip_neg = math.isclose(self.neg_scale, 0.0)
        skip_empty = skip_neg and math.isclose(self.cfg, 1.0)
        return PerpNegDenoiser(model, conds(self.positive, "positive"),
                               [] if skip_neg else conds(self.negative, "negative"),
                               [] if skip_empty else conds(self.empty_conditioning, "empty_conditioning"),
                               list(self.positive), self.cfg, self.neg_scale, dtype, mask, clean)


class PerpNegDenoiser(KDenoiser):
    """``Denoiser`` of PerpNegGuider; a skipped estimate counts as zeros, as ComfyUI's batch leaves it."""

    def __init__(self, model: Any, conds: list, negative: list, empty: list, conditioning: list, cfg: float,
                 neg_scale: float, dtype: Any, mask: Any = None, clean: Any = None) -> None:
        super().__init__(model, conds, [], conditioning, cfg, dtype, mask, clean)
        self.negative, self.empty, self.neg_scale = negative, empty, float(neg_scale)

    def __call__(self, x: Any, sigma: float) -> Any:
        import torch

        pos, _ = self._eval(x, sigma, self.conds, [])
        neg = self._eval(x, sigma, self.negative, [])[0] if self.negative else torch.zeros_like(pos)
        empty = self._eval(x, sigma, self.empty, [])[0] if self.empty else torch.zeros_like(pos)
        out = patches.perp_neg(pos, neg, empty, self.neg_scale, self.cfg)
        return self._blend(out) if self.active is None else self._blend(out, self.active.mask(self.mask, sigma))


# ---- the engine --------------------------------------------------------------------------------------------------

def _scaled(model: DiffusionModel, samples: Any) -> Any:
    fmt = model.latent
    return (samples - fmt.shift_factor) * fmt.scaling_factor


def _unscaled(model: DiffusionModel, x: Any) -> Any:
    fmt = model.latent
    return (x.float() / fmt.scaling_factor + fmt.shift_factor).cpu()


def sample_custom(guider: Guider, sampler: Callable[..., Any], sigmas: Any, noise: Any, latent: dict[str, Any],
                  devices: Any, callback: Callback | None = None, *, model: DiffusionModel | None = None,
                  lora_library: Any = None, preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``sampler`` over ``sigmas`` with ``guider``'s denoiser from ``noise``; returns (output, denoised_output).

    ``model`` is the guider's model loaded (``ctx.models.use(guider.model)``); ``devices`` a DeviceManager.
    """
    import torch

    from .patch_run import attach
    from .preview import preview_jpeg

    model = model if model is not None else guider.model
    from .devices import for_model

    devices = for_model(devices, model)  # ModelComputeDtype
    if getattr(model, "family", "unet") != "unet":  # flow transformers (Flux, …): their own loop
        from .flow.custom import sample_custom as flow_sample_custom

        return flow_sample_custom(guider, sampler, sigmas, noise, latent, devices, callback, model=model,
                                  lora_library=lora_library, preview_every=preview_every)
    samples = prepare_latent(model, latent)
    out = output_latent(latent, model.latent.downscale)
    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sig.numel() == 0:
        done = dict(out, samples=samples)
        return done, done
    start, gen = draw_noise(noise, dict(latent, samples=samples))
    if tuple(start.shape) != tuple(samples.shape):
        raise ValueError(f"noise: {type(noise).__name__} made noise of shape {tuple(start.shape)} for a latent of "
                         f"shape {tuple(samples.shape)}; it must match the latent")
    fmt = model.latent
    last: dict[str, Any] = {}
    with devices.use(model.unet), lora_applied(model, lora_library), patches.applied(model) as active, \
            torch.no_grad():
        device, dtype = devices.device, devices.dtype
        batch, _, h, w = samples.shape
        clean = _scaled(model, samples).to(device)
        start = start.to(device)
        mask = None
        if latent.get("noise_mask") is not None:
            mask = _resize_mask(latent["noise_mask"], batch, h, w).to(device)
        denoiser = guider.denoiser(model, batch, (h * fmt.downscale, w * fmt.downscale), device, dtype, mask, clean)
        attach(denoiser, active, model, samples, sig, device, dtype)
        x = clean + start * float(sig[0])

        def step_done(step: int, count: int, x0: Any) -> None:
            last["x0"] = x0
            if callback is not None:
                show = step % preview_every == 0 or step == count
                callback(step, count, preview_jpeg(_unscaled(model, x0), fmt) if show else None)

        if sig.numel() > 1:
            x = sampler(denoiser, x, sig.to(device), generator=gen, callback=step_done)
        if mask is not None:
            x = mask * x + (1.0 - mask) * (clean + start * float(sig[-1]))
        result = dict(out, samples=_unscaled(model, x))
        denoised = dict(out, samples=_unscaled(model, last["x0"])) if "x0" in last else result
    return result, denoised


def add_noise(model: DiffusionModel, noise: Any, sigmas: Any, latent: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's AddNoise: the latent plus the noise scaled by |sigmas[0] - sigmas[-1]| (sigmas[0] if alone)."""
    import torch

    sig = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
    if sig.numel() == 0:
        return latent
    samples = prepare_latent(model, latent)
    start, _ = draw_noise(noise, dict(latent, samples=samples))
    scale = float((sig[0] - sig[-1]).abs()) if sig.numel() > 1 else float(sig[0])
    fmt = model.latent
    clean = _scaled(model, samples) if torch.count_nonzero(samples) > 0 else samples  # an empty latent stays 0
    noisy = _unscaled(model, clean + start * scale)
    out = output_latent(latent, fmt.downscale)
    return dict(out, samples=torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0))
