"""Model patches that change how a MODEL is sampled (ComfyUI's ``model_options`` hooks), and the one function every
sampling path calls to apply them.

A patch is an immutable value recorded on the MODEL (``DiffusionModel.patches``; nodes add one with ``with_patch``,
never mutating the model). While a model samples, ``applied(model, unet)`` turns its patches into an ``Active`` set:

- guidance hooks, applied by ``Active.guide`` to the clean-latent estimates (x0) of one model evaluation in the
  k-diffusion form (x = x0 + sigma * noise): a cfg function (``RescaleCFG``, ``PerpNeg``: the last one recorded
  replaces plain classifier-free guidance, as ComfyUI's ``set_model_sampler_cfg_function``) then post-cfg functions
  (``SelfAttentionGuidance``);
- a denoise-mask function (``DifferentialDiffusion``), ``Active.mask``: the inpainting mask used at each step;
- UNet forward patches (``FreeU``, ``TokenMerging``, SAG's attention recorder), installed on the UNet for the run and removed after.

The diffusers path (``sampling.sample``), the k-diffusion path (``custom.KDenoiser``, also under custom sampling
guiders) call ``Active.guide`` alike; with no patch ``applied`` yields None and sampling is unchanged.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .hypernetwork import Hypernetwork


class ModelPatch:
    """Base of the patch types a model family defines in its own module (e.g. Lumina 2's RenormCFG), which its
    denoiser applies; ``with_patch`` records them like the types here. Subclasses are frozen dataclasses."""


@dataclass(frozen=True)
class RescaleCFG:
    """ComfyUI's RescaleCFG: classifier-free guidance rescaled towards the positive's std (on v-prediction)."""

    multiplier: float = 0.7


@dataclass(frozen=True, eq=False)
class PerpNeg:
    """ComfyUI's PerpNeg: guidance from the empty prompt, the negative reduced to its part perpendicular to the
    positive."""

    empty_conditioning: list = field(default_factory=list)
    neg_scale: float = 1.0


@dataclass(frozen=True)
class SelfAttentionGuidance:
    """ComfyUI's SelfAttentionGuidance: the negative's middle-block attention picks regions to blur and guide from."""

    scale: float = 0.5
    blur_sigma: float = 2.0


@dataclass(frozen=True)
class FreeU:
    """ComfyUI's FreeU (version 1) / FreeU_V2 (version 2): backbone and skip scaling in the UNet's up blocks."""

    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 1


@dataclass(frozen=True)
class DifferentialDiffusion:
    """ComfyUI's DifferentialDiffusion: the soft noise mask becomes a per-step binary mask (thresholded by how far
    the run has come), blended with the soft mask by ``1 - strength``."""

    strength: float = 1.0


@dataclass(frozen=True)
class TokenMerging:
    """ComfyUI's TomePatchModel: merge ``ratio`` of the queries of the full-resolution self-attentions (tomesd);
    the random picks come from a generator seeded per run, so a run repeats exactly."""

    ratio: float = 0.3


@dataclass(frozen=True)
class CFGNorm:
    """ComfyUI's CFGNorm (a post-cfg function): the guided x0 scaled down, per pixel, to at most the norm over
    channels of the positive's x0, times ``strength``."""

    strength: float = 1.0


@dataclass(frozen=True, eq=False)
class LatentOperationCFG:
    """ComfyUI's LatentApplyOperationCFG (a pre-cfg function): a LATENT_OPERATION applied to the positive x0's
    difference from the negative's (to the positive alone when cfg 1 skipped the negative)."""

    operation: Callable[..., Any]
    #: FreSca: leave the positive alone when there is no negative (cfg 1)
    guidance_only: bool = False


PATCH_TYPES = (RescaleCFG, PerpNeg, SelfAttentionGuidance, FreeU, DifferentialDiffusion, TokenMerging, CFGNorm,
               LatentOperationCFG,
               Hypernetwork)


def patches_of(model: Any) -> tuple[Any, ...]:
    """The patches recorded on a MODEL (a handle or a DiffusionModel)."""
    from ..models.handles import is_handle

    if is_handle(model):
        return tuple(dict(model.changes).get("patches", ()))
    return tuple(getattr(model, "patches", ()) or ())


def with_patch(model: Any, patch: Any) -> Any:
    """A copy of the MODEL (handle or DiffusionModel, weights shared) with one more patch."""
    from ..models.handles import derive

    if not isinstance(patch, PATCH_TYPES + (ModelPatch,)):
        raise TypeError(f"{type(patch).__name__} is not a model patch; use one of "
                        f"{', '.join(t.__name__ for t in PATCH_TYPES)}")
    return derive(model, patches=patches_of(model) + (patch,))


def pre_cfg(patches: tuple[Any, ...], cond: Any, uncond: Any) -> Any:
    """The positive x0 after the pre-cfg functions (LatentOperationCFG), in the order recorded."""
    for patch in patches:
        if not isinstance(patch, LatentOperationCFG) or (uncond is None and patch.guidance_only):
            continue
        cond = patch.operation(latent=cond) if uncond is None else patch.operation(latent=cond - uncond) + uncond
    return cond


def needs_uncond(model: Any) -> bool:
    """Whether the negative must be evaluated even at cfg 1 (SAG guides from it, as ComfyUI disables its cfg-1
    shortcut)."""
    return any(isinstance(p, SelfAttentionGuidance) for p in patches_of(model))


# ---- the numerics, on tensors ------------------------------------------------------------------------------------

def rescale_cfg(x: Any, sigma: float, cond: Any, uncond: Any, cfg: float, multiplier: float) -> Any:
    """RescaleCFG's guided x0 from the positive and negative x0 at k-form ``x``, noise level ``sigma``."""
    import torch

    s2 = sigma * sigma + 1.0
    xs = x / s2
    v_cond = (xs - cond) * math.sqrt(s2) / sigma
    v_uncond = (xs - uncond) * math.sqrt(s2) / sigma
    v_cfg = v_uncond + cfg * (v_cond - v_uncond)
    ro_pos = torch.std(v_cond, dim=tuple(range(1, v_cond.dim())), keepdim=True)
    ro_cfg = torch.std(v_cfg, dim=tuple(range(1, v_cfg.dim())), keepdim=True)
    v_final = multiplier * v_cfg * (ro_pos / ro_cfg) + (1.0 - multiplier) * v_cfg
    return xs - v_final * sigma / math.sqrt(s2)


def perp_neg(pos: Any, neg: Any, empty: Any, neg_scale: float, cfg: float) -> Any:
    """Perp-Neg's guided estimate: empty + cfg * (p - neg_scale * (n minus its projection on p)), p and n taken
    from the empty prompt's estimate; the projection over the whole batch tensor, as ComfyUI's."""
    import torch

    p = pos - empty
    n = neg - empty
    perp = n - (torch.mul(n, p).sum() / (torch.norm(p) ** 2)) * p
    return empty + cfg * (p - perp * neg_scale)


def cfg_norm(cond: Any, out: Any, strength: float) -> Any:
    """CFGNorm's x0: ``out`` × clamp(|cond| / (|out| + 1e-8), 0, 1) × strength, norms over channels (dim 1)."""
    import torch

    scale = (torch.norm(cond, dim=1, keepdim=True) / (torch.norm(out, dim=1, keepdim=True) + 1e-8)).clamp(0.0, 1.0)
    return out * scale * strength


def gaussian_blur(img: Any, kernel_size: int, sigma: float) -> Any:
    """A separable Gaussian blur per channel with reflect padding (SAG's)."""
    import torch
    import torch.nn.functional as F

    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, steps=kernel_size)
    pdf = torch.exp(-0.5 * (xs / sigma).pow(2))
    k1 = (pdf / pdf.sum()).to(device=img.device, dtype=img.dtype)
    k2 = torch.mm(k1[:, None], k1[None, :]).expand(img.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(img, [pad, pad, pad, pad], mode="reflect"), k2, groups=img.shape[-3])


def sag_blur(x0: Any, attn: Any, sigma: float, threshold: float = 1.0) -> Any:
    """``x0`` blurred where the (negative's) middle-block self-attention map, averaged over heads, sums above
    ``threshold``; elsewhere unchanged."""
    import torch.nn.functional as F

    _, hw1, hw2 = attn.shape
    b, _, lh, lw = x0.shape
    attn = attn.reshape(b, -1, hw1, hw2)
    mask = attn.mean(1, keepdim=False).sum(1, keepdim=False) > threshold
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / hw1)) - 1).bit_length()
    mask = mask.reshape(b, math.ceil(lh / ratio), math.ceil(lw / ratio)).unsqueeze(1).type(attn.dtype)
    mask = F.interpolate(mask, (lh, lw))
    blurred = gaussian_blur(x0, kernel_size=9, sigma=sigma)
    return blurred * mask + x0 * (1 - mask)


def fourier_filter(x: Any, threshold: int, scale: float) -> Any:
    """``x`` with its lowest spatial frequencies (a 2·threshold square around DC) scaled by ``scale`` (FreeU)."""
    import torch

    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    b, c, h, w = freq.shape
    mask = torch.ones((b, c, h, w), device=x.device)
    ch, cw = h // 2, w // 2
    mask[..., ch - threshold:ch + threshold, cw - threshold:cw + threshold] = scale
    out = torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return out.to(x.dtype)


def freeu_skip(h: Any, hsp: Any, b: float, s: float, version: int) -> tuple[Any, Any]:
    """FreeU on one up-block input: the backbone ``h``'s first half of channels scaled by ``b`` (V2: by
    (b - 1) · its min-max normalised channel mean + 1), the skip ``hsp`` Fourier-filtered by ``s``."""
    import torch

    h = h.clone()
    half = h.shape[1] // 2
    if version == 2:
        mean = h.mean(1).unsqueeze(1)
        n = mean.shape[0]
        hi, _ = torch.max(mean.view(n, -1), dim=-1, keepdim=True)
        lo, _ = torch.min(mean.view(n, -1), dim=-1, keepdim=True)
        mean = (mean - lo.unsqueeze(2).unsqueeze(3)) / (hi - lo).unsqueeze(2).unsqueeze(3)
        h[:, :half] = h[:, :half] * ((b - 1) * mean + 1)
    else:
        h[:, :half] = h[:, :half] * b
    return h, fourier_filter(hsp, threshold=1, scale=s)


def dd_threshold(sigma: float, sigma_from: float, sigma_to: float, table: Any) -> float:
    """DifferentialDiffusion's threshold at ``sigma`` for a run from ``sigma_from`` to ``sigma_to`` (raised to the
    model's smallest sigma), in timesteps of the model's training ``table`` (nearest in log sigma)."""
    t_to = timestep_index(max(sigma_to, float(table[0])), table)
    t_from = timestep_index(sigma_from, table)
    if t_from == t_to:
        return 0.0
    return (timestep_index(sigma, table) - t_to) / (t_from - t_to)


def timestep_index(sigma: float, table: Any) -> int:
    """The training timestep whose sigma is nearest to ``sigma`` in log space (ComfyUI's ``timestep``)."""
    import numpy as np

    return int(np.abs(np.log(max(float(sigma), 1e-10)) - np.log(np.asarray(table))).argmin())


# ---- one sampling run -------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One model evaluation in the k-diffusion form, as the guidance hooks see it.

    ``cond``/``uncond`` are the positive/negative x0 estimates (uncond None when cfg 1 skipped it); ``denoise(x,
    entries)`` evaluates the model at this noise level on device conditioning entries; ``unconds`` are the
    negative's entries; ``encode(conditioning)`` prepares a CONDITIONING for ``denoise``.
    """

    x: Any
    sigma: float
    cfg: float
    cond: Any
    uncond: Any
    denoise: Callable[[Any, list], Any]
    unconds: list
    encode: Callable[[list], list]


class Active:
    """A model's patches for one sampling run: the guidance and mask hooks, and the UNet patches installed."""

    def __init__(self, patches: tuple[Any, ...], table: Any) -> None:
        self.patches, self.table = patches, table
        cfg_fns = [p for p in patches if isinstance(p, (RescaleCFG, PerpNeg))]
        self.cfg_fn = cfg_fns[-1] if cfg_fns else None
        self.post = [p for p in patches if isinstance(p, SelfAttentionGuidance)]
        masks = [p for p in patches if isinstance(p, DifferentialDiffusion)]
        self.mask_fn = masks[-1] if masks else None
        self.recorder: Any = None  # SAG's attention recorder (``attention.Recorder``) while installed
        self.run_sigmas: tuple[float, float] | None = None
        self._encoded: dict[int, list] = {}

    def begin(self, sigma_from: float, sigma_to: float) -> None:
        """Note the run's first and last noise levels (DifferentialDiffusion's thresholds)."""
        self.run_sigmas = (float(sigma_from), float(sigma_to))

    def before_eval(self) -> None:
        """Call right before the positive/negative evaluation of a step (SAG records the negative's attention)."""
        if self.recorder is not None:
            self.recorder.reset()

    def guide(self, step: Step) -> Any:
        """The guided x0 of one model evaluation: the pre-cfg functions, the cfg function (or plain CFG), then the
        post-cfg functions."""
        cond, uncond = pre_cfg(self.patches, step.cond, step.uncond), step.uncond
        if uncond is None:
            out = cond
        elif isinstance(self.cfg_fn, RescaleCFG):
            out = rescale_cfg(step.x, step.sigma, cond, uncond, step.cfg, self.cfg_fn.multiplier)
        elif isinstance(self.cfg_fn, PerpNeg):
            key = id(self.cfg_fn)
            if key not in self._encoded:
                self._encoded[key] = step.encode(self.cfg_fn.empty_conditioning)
            empty = step.denoise(step.x, self._encoded[key])
            out = perp_neg(cond, uncond, empty, self.cfg_fn.neg_scale, step.cfg)
        else:
            out = uncond + step.cfg * (cond - uncond)
        for patch in self.patches:  # post-cfg functions in the order recorded
            if isinstance(patch, SelfAttentionGuidance):
                out = self._sag(patch, step, out)
            elif isinstance(patch, CFGNorm):
                out = cfg_norm(cond, out, patch.strength)
        return out

    def _sag(self, patch: SelfAttentionGuidance, step: Step, out: Any) -> Any:
        attn = self.recorder.first(step.x.shape[0]) if self.recorder is not None else None
        if step.uncond is None or attn is None or min(out.shape[2:]) <= 4:  # too small to pad: ComfyUI skips too
            return out
        degraded = sag_blur(step.uncond, attn, patch.blur_sigma)
        sag = step.denoise(degraded + step.x - step.uncond, step.unconds)
        return out + (degraded - sag) * patch.scale

    def mask(self, mask: Any, sigma: float) -> Any:
        """The inpainting mask to use at noise level ``sigma`` (DifferentialDiffusion's per-step mask)."""
        if self.mask_fn is None or mask is None or self.run_sigmas is None:
            return mask
        threshold = dd_threshold(sigma, self.run_sigmas[0], self.run_sigmas[1], self.table)
        binary = (mask >= threshold).to(mask.dtype)
        strength = self.mask_fn.strength
        if strength and strength < 1:
            return strength * binary + (1 - strength) * mask
        return binary


@contextlib.contextmanager
def applied(model: Any, unet: Any = None) -> Iterator[Active | None]:
    """The model's patches active for one run (None without patches): UNet patches installed on ``unet`` (default
    ``model.unet``, on its device already) for the block and removed after."""
    patches = patches_of(model)
    if not patches:
        yield None
        return
    from .attention import install_freeu, install_sag_recorder, install_tome
    from .sampling import _sigma_table

    active = Active(patches, _sigma_table(model.scheduler_config))
    unet = unet if unet is not None else model.unet
    with contextlib.ExitStack() as stack:
        for patch in patches:
            if isinstance(patch, FreeU):
                stack.enter_context(install_freeu(unet, patch))
        tome = [p for p in patches if isinstance(p, TokenMerging)]
        if tome:  # the last one recorded, as ComfyUI's attn1 patches of one model replace each other
            stack.enter_context(install_tome(unet, tome[-1].ratio))
        hypernets = [p for p in patches if isinstance(p, Hypernetwork)]
        if hypernets:  # ComfyUI's attn1/attn2 patches: every hypernetwork, chained in the order recorded
            from .hypernetwork import install as install_hypernetworks

            stack.enter_context(install_hypernetworks(unet, hypernets))
        if active.post:
            active.recorder = stack.enter_context(install_sag_recorder(unet))
        yield active


def k_form(x_in: Any, out: Any, sigma: float, prediction_type: str) -> tuple[Any, Any]:
    """(k-form x, x0) from a UNet's input ``x_in`` (scaled by 1/sqrt(sigma² + 1)) and output."""
    s2 = sigma * sigma + 1.0
    x = x_in * math.sqrt(s2)
    return x, to_x0(x, out, sigma, prediction_type)


def to_x0(x: Any, out: Any, sigma: float, prediction_type: str) -> Any:
    """x0 from a model output at k-form ``x``, noise level ``sigma``."""
    if prediction_type == "sample":
        return out
    if prediction_type == "v_prediction":
        return x / (sigma * sigma + 1) - out * (sigma / math.sqrt(sigma * sigma + 1))
    return x - sigma * out


def from_x0(x: Any, x0: Any, sigma: float, prediction_type: str) -> Any:
    """The model output (epsilon, v or sample) that gives ``x0`` at k-form ``x``, noise level ``sigma``."""
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return (x / (sigma * sigma + 1) - x0) * math.sqrt(sigma * sigma + 1) / sigma
    return (x - x0) / sigma
