"""Cosmos Predict2 under the shared flow sampling loop, with ComfyUI's EDM-style noise levels.

ComfyUI samples Cosmos Predict2 (``ModelSamplingCosmosRFlow`` + ``COSMOS_RFLOW``) on EDM sigmas (0.002 … 80,
log-spaced table): x = x0 + sigma * noise, the model sees x / (1 + sigma) at time t = sigma / (1 + sigma) and
predicts the velocity v; x0 = x (1 - t) - v t. That is a rectified flow in t: x / (1 + sigma) = (1 - t) x0 + t noise.
So KSampler/BasicScheduler compute ComfyUI's EDM sigmas on ``CosmosFlow``'s table (every scheduler as ComfyUI does
it), and the run maps them to t and goes through the shared loop (``flow.custom.sample_custom``) on the model's
rectified-flow view (family ``cosmos_rf``, denoiser ``CosmosDenoiser``). The loop's start t·noise + (1 - t)·x0 and
its end x / (1 - t) are exactly ComfyUI's EDM start and (identity) inverse noise scaling. Euler steps are the same
in either variable; other samplers step in t (ComfyUI's step in sigma), which is the one difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..auraflow.sampling import text_entries
from ..flow.sampling import FlowDenoiser, _batch
from ..flow.schedule import FlowSettings

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
#: The family name of a Cosmos model's rectified-flow view (what the shared loop samples).
RF_FAMILY = "cosmos_rf"


@dataclass(frozen=True)
class CosmosFlow(FlowSettings):
    """ComfyUI's ModelSamplingCosmosRFlow: EDM sigmas in [sigma_min, sigma_max], timestep sigma / (sigma + 1)."""

    kind: str = "cosmos"
    shift: float = 1.0
    multiplier: float = 1.0
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX

    @property
    def timesteps(self) -> int:
        """Entries of the sigma table."""
        return 1000

    def table(self) -> Any:
        """The ascending EDM sigma table (float32 as ComfyUI stores it, returned as float64 numpy)."""
        import numpy as np
        import torch

        t = torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), self.timesteps).exp()
        return t.numpy().astype(np.float64)

    def _edges(self) -> tuple[float, float]:
        table = self.table()
        return float(table[0]), float(table[-1])

    def sigma(self, t: Any) -> Any:
        """EDM sigma at model time ``t`` (t / (1 - t), sigma_max from sigma_max / (sigma_max + 1) on)."""
        import numpy as np

        t = np.asarray(t, dtype=np.float64)
        smax = self._edges()[1]
        with np.errstate(divide="ignore"):
            return np.where(t >= smax / (smax + 1), smax, t / (1 - t))

    def timestep(self, sigma: Any) -> Any:
        """Model time of EDM sigma: sigma / (sigma + 1)."""
        import numpy as np

        sigma = np.asarray(sigma, dtype=np.float64)
        return sigma / (sigma + 1)

    def percent_to_sigma(self, percent: float) -> float:
        """The EDM sigma at ``percent`` of the way through sampling (ComfyUI's ModelSamplingContinuousEDM)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        smin, smax = self._edges()
        return math.exp((math.log(smax) - math.log(smin)) * (1.0 - percent) + math.log(smin))


def to_t(sigmas: Any) -> Any:
    """EDM sigmas → rectified-flow times t = sigma / (1 + sigma) (float32 CPU tensor)."""
    import torch

    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
    return (s / (1.0 + s)).float()


def rf_view(model: Any) -> Any:
    """The model as the shared flow loop samples it: family ``cosmos_rf``, sigmas in t."""
    return replace(model, family=RF_FAMILY)


class CosmosDenoiser(FlowDenoiser):
    """``denoiser(x, t)``: the guided x0 estimate of a Cosmos Predict2 transformer at rectified-flow time ``t``."""

    def _entries(self, conditioning: list, what: str) -> list[tuple]:
        width = int(self.transformer.config.text_embed_dim)
        entries = text_entries(conditioning, what, width, "Cosmos Predict2", "CLIPLoader type cosmos (old T5-XXL)",
                               self.device, self.dtype)
        return [(emb, None, None, (), strength, None, None) for emb, strength in entries]

    def _velocity(self, x: Any, sigma: float, entry: tuple) -> Any:
        import torch
        import torch.nn.functional as F

        if x.dim() == 5:
            raise ValueError("Cosmos Predict2 video latents (video2world) are not sampled here yet; use the "
                             "text-to-image model with EmptySD3LatentImage")
        hidden = x[:, :, None]
        b, c, _, h, w = hidden.shape
        extra = int(self.transformer.config.in_channels) - c
        if extra != 1:
            raise ValueError(f"this Cosmos transformer takes {extra} channels beside the latent (a video2world "
                             "model's condition mask); only text-to-image models are sampled here yet")
        if h % 2 or w % 2:  # 1×2×2 patches: pad circularly as ComfyUI does
            hidden = F.pad(hidden, (0, w % 2, 0, h % 2, 0, 0), mode="circular")
        # the padding-mask channel: all zeros, as ComfyUI and the diffusers pipelines pass it
        hidden = torch.cat([hidden, hidden.new_zeros(b, 1, *hidden.shape[2:])], dim=1)
        t = torch.full((b,), float(sigma), device=x.device, dtype=self.dtype)
        out = self.transformer(hidden_states=hidden.to(self.dtype), timestep=t,
                               encoder_hidden_states=_batch(entry[0], b), return_dict=False)[0]
        return out[:, :, 0, :h, :w].float()


@dataclass(frozen=True)
class _SeedNoise:
    """KSampler's noise as a NOISE value: the seed's Gaussian noise, or zeros (add_noise off) with the seed's
    generator still driving the sampler's step noise."""

    seed: int
    add: bool = True

    def generate_noise(self, latent: dict[str, Any], generator: Any = None) -> Any:
        """The starting noise for ``latent``."""
        import torch

        from ..guiders import RandomNoise

        if not self.add:
            return torch.zeros_like(latent["samples"], dtype=torch.float32)
        return RandomNoise(self.seed).generate_noise(latent, generator)


def sample(model: Any, positive: list, negative: list, latent: dict[str, Any], opts: Any, devices: Any,
           callback: Any = None, preview_every: int = 4, lora_library: Any = None, samplers: Any = None) -> dict:
    """``families.SAMPLERS`` entry: KSampler on Cosmos Predict2 (ComfyUI's EDM sigmas, run in t by the shared loop)."""
    from ..flow.custom import sample_custom
    from ..flow.sampling import sampler_fn, sigmas_for
    from ..guiders import CFGGuider, RandomNoise

    view = rf_view(model)
    noise = RandomNoise(int(opts.seed)) if opts.add_noise else _SeedNoise(int(opts.seed), False)
    out, _ = sample_custom(CFGGuider(view, list(positive), list(negative), float(opts.cfg)),
                           sampler_fn(opts.sampler_name, samplers), to_t(sigmas_for(model, opts)), noise, latent,
                           devices, callback, model=view, lora_library=lora_library, preview_every=preview_every)
    return out


def sample_custom(guider: Any, sampler: Any, sigmas: Any, noise: Any, latent: dict[str, Any], devices: Any,
                  callback: Any = None, *, model: Any = None, lora_library: Any = None,
                  preview_every: int = 4) -> tuple[dict[str, Any], dict[str, Any]]:
    """``families.CUSTOM_SAMPLERS`` entry: SamplerCustomAdvanced on Cosmos Predict2 with EDM SIGMAS."""
    from ..flow import custom

    model = model if model is not None else guider.model
    return custom.sample_custom(guider, sampler, to_t(sigmas), noise, latent, devices, callback, model=rf_view(model),
                                lora_library=lora_library, preview_every=preview_every)


__all__ = ["CosmosDenoiser", "CosmosFlow", "RF_FAMILY", "SIGMA_MAX", "SIGMA_MIN", "rf_view", "sample",
           "sample_custom", "to_t"]
